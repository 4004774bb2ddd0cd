# The root config: `make run` starts it. Try:
#   curl 127.0.0.1:8080/plugins/hello/
#   curl '127.0.0.1:8080/plugins/hello/echo/a/b?x=1'
runner {
  listen    = "127.0.0.1:8080"
  state_dir = ".runner"
}

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

plugin "slow" {
  image = "xcore-examples/slow:latest"
  port  = 8080
  env   = { SLOW_DELAY = "100ms" }

  supervisor {
    request_timeout = "5s"
  }
}
