//! A sandbox's default routes and /etc files: planned from the model under the controller's
//! lock (a plain value), set without it while the sandbox is reserved in `creating_sandboxes`
//! (no other change to it interleaves). A create sets them before its commit, a connect
//! before its commit (and those from before if the commit fails), a disconnect after its
//! commit.

use std::path::PathBuf;

use super::*;
use crate::control::etc_files::EtcFiles;
use crate::control::wiring::DefaultRoutes;

/// What a sandbox's namespace gets besides its devices, as the model says.
#[derive(Clone)]
pub(super) struct SandboxSetup {
    netns: PathBuf,
    dirs: StateDir,
    /// None: not tapnet's to set (a host-network sandbox; a plugin's Join set them).
    routes: Option<DefaultRoutes>,
    /// None: a host-network sandbox has none of its own.
    etc: Option<EtcFiles>,
}

impl SandboxSetup {
    /// Set the default routes (slow: a thread enters the namespace).
    pub(super) fn set_routes(&self) -> Result<()> {
        match &self.routes {
            Some(routes) => routes.set(&self.netns),
            None => Ok(()),
        }
    }

    /// Write the /etc files (a sandbox's are rewritten in place: it sees them at once).
    pub(super) fn write_etc(&self) -> Result<()> {
        match &self.etc {
            Some(etc) => etc.write(&self.dirs),
            None => Ok(()),
        }
    }

    /// Write the /etc files of a live sandbox: a failure is reported, not fatal (its
    /// networks changed either way).
    pub(super) fn refresh_etc(&self, sandbox: &str) {
        if let Err(e) = self.write_etc() {
            eprintln!("tapnet: sandbox {sandbox}: {e}");
        }
    }

    /// Put back the routes of a sandbox whose change failed (best effort: the change's error
    /// is the one reported).
    pub(super) fn restore_routes(&self, sandbox: &str) {
        if let Err(e) = self.set_routes() {
            eprintln!("tapnet: sandbox {sandbox}: undo its default routes: {e}");
        }
    }

    /// Put back the routes and files of a sandbox whose change failed.
    pub(super) fn restore(&self, sandbox: &str) {
        self.restore_routes(sandbox);
        self.refresh_etc(sandbox);
    }
}

impl Inner {
    /// The default routes and /etc files of `sb` (in the model or not yet) as the model's
    /// networks say.
    pub(super) fn plan_setup(&self, sb: &Sandbox) -> SandboxSetup {
        let host = drivers::shares_host(&self.state, sb);
        SandboxSetup {
            netns: self.dirs.netns_path(&sb.name),
            dirs: self.dirs.clone(),
            routes: self.plan_default_routes(sb),
            etc: (!host).then(|| EtcFiles::of(&self.state, sb)),
        }
    }

    /// `sb`'s default routes as the model says (`default_routes`).
    pub(super) fn plan_default_routes(&self, sb: &Sandbox) -> Option<DefaultRoutes> {
        default_routes(&self.state, sb)
    }

    /// Set `sb`'s default routes now, under the lock: restore only, before requests are served.
    pub(super) fn sync_default_route(&self, sb: &Sandbox) -> Result<()> {
        match self.plan_default_routes(sb) {
            Some(routes) => routes.set(&self.dirs.netns_path(&sb.name)),
            None => Ok(()),
        }
    }
}

/// As in Docker: the default route goes via the gateway of the first non-internal network
/// (IPv6 likewise, from the first with an IPv6 gateway). None when they are not tapnet's to
/// set.
pub(super) fn default_routes(state: &State, sb: &Sandbox) -> Option<DefaultRoutes> {
    // Host mode has no route of its own; a remote plugin's Join set it.
    let routed = sb.endpoints.iter().any(|e| {
        state
            .network(&e.network)
            .is_some_and(|n| drivers::of(n.driver).routes_itself())
    });
    if drivers::shares_host(state, sb) || routed {
        return None;
    }
    let gateway_of = |ep: &Endpoint| {
        let net = state.network(&ep.network)?;
        (drivers::of(net.driver).has_gateway() && !net.internal).then_some(net)
    };
    let route = sb.endpoints.iter().find_map(|ep| {
        let net = gateway_of(ep)?;
        Some((net.gateway?, ep.interface.clone()?))
    });
    let route6 = sb.endpoints.iter().find_map(|ep| {
        let net = gateway_of(ep)?;
        ep.ipv6?;
        Some((net.gateway6?, ep.interface.clone()?))
    });
    Some(DefaultRoutes { route, route6 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Network `name`, a bridge on 10.9.`third`.0/24 (and fd00:9:`third`::/64 with `v6`).
    fn network(state: &mut State, name: &str, third: u8, internal: bool, v6: bool) {
        let mut net = state.network("bridge").cloned().unwrap();
        net.name = name.into();
        net.builtin = false;
        net.internal = internal;
        net.subnet = Some(format!("10.9.{third}.0/24").parse().unwrap());
        net.gateway = Some(Ipv4Addr::new(10, 9, third, 1));
        if v6 {
            net.subnet6 = Some(format!("fd00:9:{third}::/64").parse().unwrap());
            net.gateway6 = Some(format!("fd00:9:{third}::1").parse().unwrap());
        }
        state.networks.push(net);
    }

    fn join(state: &State, sb: &mut Sandbox, network: &str) {
        let net = state.network(network).cloned().unwrap();
        let ep = endpoints::plan_endpoint(state, sb, &net, None, None, Vec::new()).unwrap();
        sb.endpoints.push(ep);
    }

    #[test]
    fn routes_go_via_the_first_non_internal_network_and_none_is_planned_as_a_removal() {
        let mut state = default_state().unwrap();
        network(&mut state, "inside", 1, true, true);
        network(&mut state, "outside", 2, false, true);
        network(&mut state, "plain", 3, false, false);
        let mut sb = Sandbox {
            name: "a".into(),
            id: new_id().unwrap(),
            hostname: "a".into(),
            endpoints: Vec::new(),
            ports: Vec::new(),
        };
        join(&state, &mut sb, "inside");
        // What a connect's failed commit puts back: no default route at all.
        let before = default_routes(&state, &sb).unwrap();
        assert_eq!(before, DefaultRoutes::default());
        join(&state, &mut sb, "plain");
        join(&state, &mut sb, "outside");
        let after = default_routes(&state, &sb).unwrap();
        assert_eq!(
            after.route,
            Some((Ipv4Addr::new(10, 9, 3, 1), "eth1".to_string()))
        );
        // IPv6 from the first non-internal network with an IPv6 gateway.
        assert_eq!(
            after.route6,
            Some(("fd00:9:2::1".parse().unwrap(), "eth2".to_string()))
        );
        // Host mode: none of tapnet's to set.
        let mut host = sb.clone();
        host.endpoints.clear();
        join(&state, &mut host, "host");
        assert_eq!(default_routes(&state, &host), None);
    }
}
