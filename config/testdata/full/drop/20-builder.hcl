plugin "builder" {
  build = "../examples/builder" # relative to this file
  port  = 3000
}
