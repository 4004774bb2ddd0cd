plugin "hello" {
  image = "hello:latest"
  port  = 8080
  env   = { TOKEN = file("no-such-file.txt") }
}
