// Package taskserver is caddy-spawn's own containerd task server: one
// long-lived process that serves containerd's task API (v3, over ttrpc) for
// every request container of a spawn app, so that no shim binary is started
// per container. containerd reaches it through sandbox attach: each
// container names our sandbox record, and each task is created with the
// server's socket as its task API endpoint.
//
// The server drives crun to create containers, starts them by opening
// crun's exec FIFO, signals and reaps their init processes itself (it is a
// child subreaper), and reports exits to containerd as a shim does: through
// the Wait call and TaskExit events. containerd stays the authority: its
// records, snapshots and task list are the truth, and `ctr tasks ls` lists
// every live request container.
//
// It runs on Linux only; elsewhere New fails with ErrUnsupported.
package taskserver
