# Every field set; compared to a complete expected Config in load_test.go.
runner {
  listen           = "127.0.0.1:9080"
  admin_listen     = "127.0.0.1:9081"
  admin_token_file = "secrets/admin.token"
  state_dir        = "state"
  plugins_dir      = "drop"
  watch            = false
  reach            = "address"
  keep_on_exit     = true
  trusted_proxies  = ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]
  start_concurrency = 3
  protect_host     = false
  backend          = "docker"
  registry_poll    = "1m"
}

service "kv" {
  builtin = "kv"
}

service "billing" {
  url = "https://billing.internal:9000/v1"
  headers = {
    Authorization = "Bearer ${env("XCORE_TEST_BILLING_TOKEN")}"
    X-Api-Key     = trimspace(file("secret.txt"))
  }
}

plugin "hello" {
  image    = "xcore-examples/hello:latest"
  pull     = "always"
  registry_poll = "30s"
  port     = 8080
  command  = ["/hello", "-v"]
  env      = { GREETING = "hi", LEVEL = 3, SECRET = file("secret.txt") }
  services = ["kv", "settings", "billing"]

  supervisor {
    cpus            = 0.5
    memory          = "128MiB"
    pids            = 128
    network         = "none"
    read_only       = false
    user            = "0:0"
    allow_root      = true
    runtime         = "runsc"
    start_timeout   = "15s"
    request_timeout = "20s"
    stop_timeout    = "5s"
    drain_timeout   = "1m"
    max_concurrent  = 64
    max_body        = "1MB"
    replicas        = 3
    egress          = "none" # with network = "none": the same promise, accepted
    max_response_header = "64KiB"

    restart {
      policy      = "always"
      attempts    = 10
      window      = "10m"
      backoff     = "1s"
      max_backoff = "1m"
    }

    health {
      path     = "/healthz"
      interval = "2s"
      timeout  = "500ms"
      failures = 5
    }

    placement {
      constraints = ["node.labels.tier == plugins", "node.role != manager"]
      spread      = "node.labels.zone"
    }
  }
}
