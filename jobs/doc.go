// Package jobs owns caddy-spawn's asynchronous invocations: the durable
// store of accepted jobs on disk (Store), the record of one job and its
// outcome (Job, Result), and the Queue that runs them with retries and
// back-off. It knows nothing of HTTP servers or Caddy: the caller gives the
// Queue a Runner that runs one attempt.
//
// Storage is plain files, written to a temporary name, fsynced, renamed and
// the directory fsynced, rather than bbolt (which is in the module graph
// through containerd). Plain files because:
//   - a job's body may be as large as the route's max_request_body (100 MiB
//     by default): a file streams it to disk in constant memory, where a
//     bbolt value must be whole in memory inside a write transaction, and
//     bbolt's file never shrinks after the bodies are gone;
//   - every job is its own files, so a damaged entry (a torn write, a
//     truncated file) costs that one job, which is skipped and logged,
//     where a damaged bbolt file fails to open and takes the whole route's
//     spool with it;
//   - accepting a job is two fsyncs of data that has to be written anyway
//     and a rename: no write amplification through a B+tree's pages, no
//     global write lock shared by all of a route's accepts;
//   - removal is unlink, expiry is a directory scan, and an operator can
//     see and remove a route's jobs with ls and rm.
//
// Delivery is at least once: a job whose attempt was running when the
// process died runs again, with the next attempt number, after the restart.
package jobs
