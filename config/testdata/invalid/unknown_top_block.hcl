plugin "hello" {
  image = "hello:latest"
  port  = 8080
}

job "hello" {
}
