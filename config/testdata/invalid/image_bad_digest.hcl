plugin "hello" {
  image = "team/hello@sha256:ab12"
  port  = 8080
}
