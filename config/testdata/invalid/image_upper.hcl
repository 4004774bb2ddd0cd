plugin "hello" {
  image = "Team/Hello:1.4"
  port  = 8080
}
