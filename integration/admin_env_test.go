package integration

import "os"

// Tests run in parallel, each with its own `runner up`: with the default
// runner.admin_listen (127.0.0.1:8081) they would fight over one port. The admin API of
// every runner of the suite takes an ephemeral port instead; `runner up` prints it
// ("admin http://127.0.0.1:PORT/ (token in FILE)") and the tests pass it on with --admin.
func init() {
	if os.Getenv("XCORE_ADMIN_LISTEN") == "" {
		_ = os.Setenv("XCORE_ADMIN_LISTEN", "127.0.0.1:0")
	}
}
