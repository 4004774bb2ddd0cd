# a second definition of a plugin of the root file

plugin "hello" {
  image = "hello:v2"
  port  = 8080
}
