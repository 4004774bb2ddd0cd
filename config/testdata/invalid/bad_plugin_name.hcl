plugin "Hello World" {
  image = "hello:latest"
  port  = 8080
}
