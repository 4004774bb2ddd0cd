plugin "hello" {
  image = "hello:latest"
  port  = 0
}
