// cnitool as upstream ships it (github.com/containernetworking/cni/cnitool), reduced to what
// tests/cni.rs uses, built against Debian's libcni source (golang-github-appc-cni-dev) with no
// network: `cnitool add|check|del NETWORK NETNS`. NETCONFPATH names the directory of the
// network configurations, CNI_PATH where plugins are, CNI_IFNAME the interface (default eth0),
// CNI_CACHE_DIR libcni's result cache (default libcni's /var/lib/cni), CAP_ARGS the runtime's
// capability arguments as JSON (e.g. portmap's {"portMappings": [...]}). The container id is
// upstream's: "cnitool-" and the first 20 hex digits of the SHA-512 of the namespace's path.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cnitool:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: cnitool add|check|del NETWORK NETNS")
		os.Exit(2)
	}
	command, name, netns := os.Args[1], os.Args[2], os.Args[3]
	netconf, err := libcni.LoadConfList(os.Getenv("NETCONFPATH"), name)
	if err != nil {
		fail(err)
	}
	netns, err = filepath.Abs(netns)
	if err != nil {
		fail(err)
	}
	ifname := os.Getenv("CNI_IFNAME")
	if ifname == "" {
		ifname = "eth0"
	}
	id := fmt.Sprintf("cnitool-%x", sha512.Sum512([]byte(netns)))[:len("cnitool-")+20]
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: ifname}
	if args := os.Getenv("CAP_ARGS"); args != "" {
		if err := json.Unmarshal([]byte(args), &rt.CapabilityArgs); err != nil {
			fail(err)
		}
	}
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	cni := libcni.NewCNIConfig(paths, nil)
	if dir := os.Getenv("CNI_CACHE_DIR"); dir != "" {
		cni = libcni.NewCNIConfigWithCacheDir(paths, dir, nil)
	}
	ctx := context.Background()
	switch command {
	case "add":
		result, err := cni.AddNetworkList(ctx, netconf, rt)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, netconf, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, netconf, rt); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown command %q", command))
	}
}
