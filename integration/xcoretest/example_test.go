package xcoretest_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/testcontainers/testcontainers-go"

	"github.com/xcore/runner/integration/xcoretest"
)

func ExampleRun() {
	ctx := context.Background()

	// The runner image (`make image` builds xcore-runner:latest) with one plugin, a local
	// image (here of examples/hello). Run returns once the plugin is healthy.
	ctr, err := xcoretest.Run(ctx, runnerImage,
		xcoretest.WithPlugin("hello", helloImage,
			"supervisor {\n  health { path = \"/healthz\" }\n}"),
	)
	// Terminate even when Run failed: it may have started the container.
	defer func() {
		if err := testcontainers.TerminateContainer(ctr); err != nil {
			log.Print(err)
		}
	}()
	if err != nil {
		log.Print(err)
		return
	}

	// The plugin answers through the runner's proxy.
	resp, err := http.Get(ctr.PluginURL("hello"))
	if err != nil {
		log.Print(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	// Output: hello from hello
}
