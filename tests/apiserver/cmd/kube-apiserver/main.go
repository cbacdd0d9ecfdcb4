// kube-apiserver, built from the k8s.io/kubernetes module: upstream's cmd/kube-apiserver main,
// so the tests judge stage-guard against the real admission chain. One addition: with
// TESTENV_EXIT_WITH_STDIN=1 it exits when its stdin closes, which happens when the test process
// that started it ends in any way, so a crashed test run leaves no server behind.
package main

import (
	"io"
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if os.Getenv("TESTENV_EXIT_WITH_STDIN") == "1" {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			os.Exit(3)
		}()
	}
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
