// A one-member etcd for the test control plane: embed.StartEtcd with its data in a
// directory of the caller's and its client and peer URLs on loopback. It prints "ready"
// once it serves, and stops on SIGTERM or SIGINT, or (with TESTENV_EXIT_WITH_STDIN=1) when its
// stdin closes, that is when the test process that started it ends.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd's data (required)")
	clientURL := flag.String("client-url", "http://127.0.0.1:2379", "URL clients connect to")
	peerURL := flag.String("peer-url", "http://127.0.0.1:2380", "URL of the single peer")
	flag.Parse()
	if *dataDir == "" {
		fail("--data-dir is required")
	}
	client, err := url.Parse(*clientURL)
	if err != nil {
		fail("--client-url: %v", err)
	}
	peer, err := url.Parse(*peerURL)
	if err != nil {
		fail("--peer-url: %v", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = "stage-guard-test"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "warn"
	// Test data is thrown away with the directory; skipping fsync keeps writes fast on busy disks.
	cfg.UnsafeNoFsync = true

	server, err := embed.StartEtcd(cfg)
	if err != nil {
		fail("start: %v", err)
	}
	select {
	case <-server.Server.ReadyNotify():
		fmt.Println("ready")
	case <-time.After(60 * time.Second):
		server.Close()
		fail("not ready after 60 s")
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	orphaned := make(chan struct{})
	if os.Getenv("TESTENV_EXIT_WITH_STDIN") == "1" {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(orphaned)
		}()
	}
	select {
	case <-signals:
	case <-orphaned:
	case err := <-server.Err():
		fail("serve: %v", err)
	}
	server.Close()
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "etcd: "+format+"\n", args...)
	os.Exit(1)
}
