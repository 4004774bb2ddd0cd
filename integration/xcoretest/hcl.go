package xcoretest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// portLine matches a plugin line that sets the port itself.
var portLine = regexp.MustCompile(`^\s*port\s*=`)

// listenAddr is where the runner's proxy and its admin API listen: loopback, any free
// port.
const listenAddr = "127.0.0.1:0"

// render writes the plugins.hcl the runner container reads: the runner block, then the
// services and plugins of the options, then the verbatim WithConfig text.
func render(o *options) string {
	var b strings.Builder
	// Port 0: the runner picks a free port and says which (see endpoints); picking it
	// here and handing it over would race with every other process on the host. The
	// admin API's port 0 comes from XCORE_ADMIN_LISTEN (see Run): the config refuses an
	// admin_listen equal to listen.
	fmt.Fprintf(&b, "runner {\n  listen           = %s\n  admin_token_file = %s\n  state_dir        = %s\n}\n",
		hclString(listenAddr), hclString(tokenPath), hclString(stateDir))
	for _, s := range o.services {
		fmt.Fprintf(&b, "\nservice %s {\n%s}\n", hclString(s.name), indent(s.body))
	}
	for _, p := range o.plugins {
		fmt.Fprintf(&b, "\nplugin %s {\n  image = %s\n", hclString(p.name), hclString(p.image))
		hasPort := false
		for _, l := range p.lines {
			hasPort = hasPort || portLine.MatchString(l)
		}
		if !hasPort {
			fmt.Fprintf(&b, "  port  = %d\n", defaultPort)
		}
		for _, l := range p.lines {
			b.WriteString(indent(l))
		}
		b.WriteString("}\n")
	}
	for _, e := range o.extra {
		b.WriteString("\n")
		b.WriteString(e)
		if !strings.HasSuffix(e, "\n") {
			b.WriteString("\n")
		}
	}
	return b.String()
}

// hclString quotes s as an HCL string literal: Go's escapes are HCL's, and template
// sequences are escaped so that "${" stays literal.
func hclString(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}

// indent indents every non-empty line of s by two spaces and ends it with a newline.
func indent(s string) string {
	s = strings.Trim(s, "\n")
	if strings.TrimSpace(s) == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.TrimSpace(l) != "" {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "\n") + "\n"
}
