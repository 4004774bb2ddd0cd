# The root config: `make run` starts it. Try:
#   curl 127.0.0.1:8080/plugins/hello/
#   curl '127.0.0.1:8080/plugins/hello/echo/a/b?x=1'
#   curl -X PUT --data 'buy milk' 127.0.0.1:8080/plugins/notes/notes/todo
#   curl 127.0.0.1:8080/plugins/notes/notes/todo
#   curl 127.0.0.1:8080/plugins/notes/quote      # url service: see the header it added
runner {
  listen    = "127.0.0.1:8080"
  state_dir = ".runner"
}

# Hosted by the runner: a key-value store, one namespace per plugin, under state_dir.
service "kv" {
  builtin = "kv"
}

# An upstream the runner forwards to, adding credentials the plugin never sees. Here it is
# the runner's own proxy (hello's /echo shows what arrived); in real use, your API with
# e.g. headers = { Authorization = "Bearer ${env("QUOTES_TOKEN")}" }.
service "quotes" {
  url     = "http://127.0.0.1:8080/plugins/hello/echo/"
  headers = { Authorization = "Bearer demo-credential" }
}

# Plain values in the environment of the plugins that declare it.
service "settings" {
  env = { FEATURE_X = "on" }
}

plugin "hello" {
  image    = "xcore-examples/hello:latest"
  port     = 8080
  env      = { GREETING = "hi" }
  services = ["settings"]

  supervisor {
    cpus   = 0.5
    memory = "64MiB"
    pids   = 64
    health {
      path = "/healthz"
    }
  }
}

plugin "notes" {
  image    = "xcore-examples/notes:latest"
  port     = 8080
  services = ["kv", "quotes", "settings"]

  supervisor {
    memory = "64MiB"
    health {
      path = "/healthz"
    }
  }
}

plugin "slow" {
  image = "xcore-examples/slow:latest"
  port  = 8080
  env   = { SLOW_DELAY = "100ms" }

  supervisor {
    request_timeout = "5s"
  }
}
