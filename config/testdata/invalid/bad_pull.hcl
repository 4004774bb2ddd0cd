plugin "hello" {
  image = "team/hello:1.4"
  pull  = "sometimes"
  port  = 8080
}
