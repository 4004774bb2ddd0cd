runner {
  plugins_dir = "sub"
}

plugin "f" {
  image = "f:${env("XCORE_TEST_FUNCS_TAG")}"
  port  = 8080
  env = {
    FROM_ENV  = env("XCORE_TEST_FUNCS_VAR")
    EMPTY     = env("XCORE_TEST_FUNCS_EMPTY")
    FROM_FILE = file("data/value.txt")
    TRIMMED   = trimspace(file("data/value.txt"))
  }
}
