plugin "hello" {
  image = "hello:latest"
}
