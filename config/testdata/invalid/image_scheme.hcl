plugin "hello" {
  image = "http://127.0.0.1:5000/team/hello:1.4"
  port  = 8080
}
