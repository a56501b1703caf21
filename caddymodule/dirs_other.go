//go:build !unix

package caddymodule

// checkOwnDir has nothing to check where spawning can't run anyway.
func checkOwnDir(string, string) error { return nil }
