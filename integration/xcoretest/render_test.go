package xcoretest

import (
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	t.Parallel()
	o := options{}
	for _, opt := range []Option{
		WithService("kv", `builtin = "kv"`),
		WithPlugin("a", "img:1"),
		WithPlugin("b", `we"ird${x}`, `port = 9000`, "supervisor {\n  pids = 64\n}"),
		WithPlugin("a", "img:2", `services = ["kv"]`), // replaces the first "a"
		WithConfig(`service "s" { env = { X = "1" } }`),
	} {
		opt(&o)
	}
	got := render(&o, "127.0.0.1:1", "127.0.0.1:2")
	want := `runner {
  listen           = "127.0.0.1:1"
  admin_listen     = "127.0.0.1:2"
  admin_token_file = "/state/admin.token"
  state_dir        = "/state"
}

service "kv" {
  builtin = "kv"
}

plugin "a" {
  image = "img:2"
  port  = 8080
  services = ["kv"]
}

plugin "b" {
  image = "we\"ird$${x}"
  port = 9000
  supervisor {
    pids = 64
  }
}

service "s" { env = { X = "1" } }
`
	if got != want {
		t.Errorf("render:\n%s\nwant:\n%s", got, want)
	}
	if strings.Count(got, "runner {") != 1 {
		t.Error("more than one runner block")
	}
}
