# a plugin needs image or build

plugin "hello" {
  port = 8080
}
