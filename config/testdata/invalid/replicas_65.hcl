plugin "hello" {
  image = "hello:latest"
  port  = 8080
  supervisor {
    replicas = 65
  }
}
