runner {
  watch = true
}
runner {
  watch = false
}
