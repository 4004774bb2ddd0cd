# A partial supervisor block merges with the defaults field by field.
plugin "partial" {
  image = "partial:latest"
  port  = 8080

  supervisor {
    memory = "64MiB"
    restart {
      attempts = 2
    }
    health {
      path = "/ready"
    }
  }
}
