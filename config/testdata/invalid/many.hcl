# several errors in one file: all of them are reported
plugin "hello" {
  image = "hello:latest"
  port  = 0
  supervisor {
    cpus    = 0
    memory  = "lots"
    network = "host"
  }
}

plugin "BAD" {
  port = 8080
}
