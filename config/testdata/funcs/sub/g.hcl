# file() is relative to the ROOT file's directory, also from a drop-in.
plugin "g" {
  image = "g:latest"
  port  = 8080
  env   = { FROM_FILE = file("data/value.txt") }
}
