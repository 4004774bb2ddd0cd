plugin "hello" {
  image = "hello:latest"
  port  = 8080
  env = {
    GREETING = "hi"
    PORT     = "9999"
  }
}
