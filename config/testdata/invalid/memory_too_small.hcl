plugin "hello" {
  image = "hello:latest"
  port  = 8080
  supervisor {
    memory = "1MiB"
  }
}
