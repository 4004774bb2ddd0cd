# Every form of image reference validates.
plugin "short" {
  image = "hello"
  port  = 8080
}
plugin "tag" {
  image = "team/hello:1.4"
  port  = 8080
}
plugin "registry" {
  image = "127.0.0.1:5000/team/hello:1.4"
  port  = 8080
}
plugin "digest" {
  image = "registry.example.com/team/hello@sha256:ab12000000000000000000000000000000000000000000000000000000000000"
  port  = 8080
}
plugin "both" {
  image = "team/hello:1.4@sha256:ab12000000000000000000000000000000000000000000000000000000000000"
  port  = 8080
  pull  = "never"
}
