# No runner block, no supervisor block: everything defaults.
plugin "min" {
  image = "min:latest"
  port  = 8080
}
