package xcoretest_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/xcore/runner/integration/xcoretest"
)

func ExampleRun() {
	ctx := context.Background()

	// Run the runner with one plugin; Run returns once the plugin is healthy.
	r, err := xcoretest.Run(ctx,
		xcoretest.WithPlugin("hello", helloImage, // a local image of examples/hello
			"supervisor {\n  health { path = \"/healthz\" }\n}"),
	)
	// Terminate even when Run failed: it may have started the container.
	defer func() {
		if err := r.Terminate(ctx); err != nil {
			log.Print(err)
		}
	}()
	if err != nil {
		log.Print(err)
		return
	}

	// The plugin answers through the runner's proxy.
	resp, err := http.Get(r.PluginURL("hello"))
	if err != nil {
		log.Print(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	// Output: hello from hello
}
