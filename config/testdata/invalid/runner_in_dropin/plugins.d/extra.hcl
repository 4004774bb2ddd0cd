plugin "hello" {
  image = "hello:latest"
  port  = 8080
}
runner {
  listen = "127.0.0.1:9090"
}
