// Command etcd is a minimal single-member etcd server for petrel's test
// control plane, built on go.etcd.io/etcd/server/v3/embed at the version
// k8s.io/kubernetes itself pins. It listens on loopback only, plain HTTP.
//
//	etcd --data-dir DIR --listen-client-url http://127.0.0.1:P1 --listen-peer-url http://127.0.0.1:P2
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"
)

func mustURL(s string) url.URL {
	u, err := url.Parse(s)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: bad URL %q: %v\n", s, err)
		os.Exit(2)
	}
	return *u
}

func main() {
	dataDir := flag.String("data-dir", "", "data directory (required)")
	name := flag.String("name", "default", "member name")
	client := flag.String("listen-client-url", "http://127.0.0.1:2379", "client URL (also advertised)")
	peer := flag.String("listen-peer-url", "http://127.0.0.1:2380", "peer URL (also advertised)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn, error")
	quota := flag.Int64("quota-backend-bytes", 2<<30, "backend size quota")
	noFsync := flag.Bool("unsafe-no-fsync", false, "disable fsync (faster, loses data on machine crash)")
	// etcd preallocates each WAL segment in full (64 MB by default); test
	// runs start a dozen clusters at once, and their disk may be small.
	walSegment := flag.Int64("wal-segment-bytes", 4<<20, "preallocated size of each WAL segment file")
	startTimeout := flag.Duration("start-timeout", 60*time.Second, "give up if not ready within this")
	flag.Parse()
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "etcd: --data-dir is required")
		os.Exit(2)
	}

	if *walSegment < 1<<20 {
		fmt.Fprintf(os.Stderr, "etcd: --wal-segment-bytes %d is below 1 MiB\n", *walSegment)
		os.Exit(2)
	}
	wal.SegmentSizeBytes = *walSegment

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cu, pu := mustURL(*client), mustURL(*peer)
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = *logLevel
	cfg.QuotaBackendBytes = *quota
	cfg.UnsafeNoFsync = *noFsync

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: start: %v\n", err)
		os.Exit(1)
	}
	defer e.Close()

	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintf(os.Stderr, "etcd: ready, serving clients on %s\n", cu.String())
	case <-time.After(*startTimeout):
		e.Server.Stop()
		fmt.Fprintf(os.Stderr, "etcd: not ready within %s\n", *startTimeout)
		os.Exit(1)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %s, shutting down\n", s)
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: server error: %v\n", err)
		os.Exit(1)
	}
}
