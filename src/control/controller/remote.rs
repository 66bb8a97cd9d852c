//! Requests that call a remote network's plugin or the cluster store, made without the
//! controller's lock, as `sandbox rm` is: checked, planned and reserved under the lock; the
//! plugin or the store called without it (up to its 5 s deadline per call, while `stats` and
//! every other request go on); committed under the lock, and the plugin's or the store's side
//! undone if the commit fails. Network create on a `remote:NAME` driver or an overlay network
//! with a store, network remove on a `remote:NAME` driver, sandbox create on a remote network (Leave and DeleteEndpoint at
//! `sandbox rm` run in its `Teardown`), and `network connect` of a running sandbox to a remote
//! network (`network disconnect`'s Leave and DeleteEndpoint also run in its `Teardown`).

use super::networks::plan_network;
use super::*;

/// Does a new network of `--driver` call out of the daemon: a plugin serves it, or it goes
/// in the cluster store (`stored`: the daemon has one)? (A name that is no driver is refused
/// by the plan, either way.)
pub(super) fn created_outside(driver: Option<&str>, stored: bool) -> bool {
    let driver = match driver {
        Some(d) => drivers::named(d).ok(),
        None => drivers::named("bridge").ok(),
    };
    driver.is_some_and(|d| {
        let imp = drivers::of(d);
        imp.plugin_served() || (stored && imp.in_cluster_store())
    })
}

impl Controller {
    /// `network create` of a plugin's network or a network in the cluster store: the plugin's
    /// CreateNetwork and the store's key are made without the lock.
    pub(super) fn network_create_outside(&self, req: NetworkCreate) -> Result<Value> {
        let (net, dirs, cluster) = {
            let mut inner = self.lock();
            inner.ensure_ula(&req)?;
            let mut net = plan_network(&req, &inner.planning_state())?;
            let imp = drivers::of(net.driver);
            // An overlay network keeps the VTEP it was made with (see `network_create`).
            imp.settle(&inner.ctx(), &mut net);
            inner.creating_networks.push(net.clone());
            let cluster = inner.cluster.clone().filter(|_| imp.in_cluster_store());
            (net, inner.plugin_dirs.clone(), cluster)
        };
        let imp = drivers::of(net.driver);
        let stored = match &cluster {
            Some(c) => c.put_network(&net),
            None => Ok(()),
        };
        let created = stored.and_then(|_| {
            imp.create_network(&dirs, &net).inspect_err(|_| {
                if let Some(c) = &cluster {
                    self.lock().unstore_network(c, &net.name);
                }
            })
        });
        let (committed, teardown) = {
            let mut inner = self.lock();
            let mut teardown = Teardown::new(inner.dp.clone());
            inner.creating_networks.retain(|n| n.name != net.name);
            let committed = created.map(|_| {
                inner
                    .commit_network(&net, &mut teardown)
                    .map(|_| inner.network_view(&net.name))
            });
            // The store's networks that waited for this create to end.
            inner.adopt_deferred(&mut teardown);
            (committed, teardown)
        };
        teardown.run();
        // The create itself failed: nothing was made to undo.
        let committed = committed?;
        match committed {
            Ok(view) => value(&view?),
            Err(e) => {
                if let Err(undo) = imp.delete_network(&dirs, &net) {
                    eprintln!("tapnet: network {}: undo create: {undo}", net.name);
                }
                if let Some(c) = &cluster {
                    self.lock().unstore_network(c, &net.name);
                }
                Err(e)
            }
        }
    }

    pub(super) fn network_remove_remote(&self, name: &str) -> Result<()> {
        let (net, dirs) = {
            let mut inner = self.lock();
            inner.refuse_docker_owned(name)?;
            let net = inner.removable_network(name)?;
            inner.deleting_networks.insert(name.to_string());
            (net, inner.plugin_dirs.clone())
        };
        // A plugin that refuses keeps the network.
        let imp = drivers::of(net.driver);
        let deleted = imp.delete_network(&dirs, &net);
        let teardown = {
            let mut inner = self.lock();
            inner.deleting_networks.remove(name);
            deleted?;
            inner.commit_network_removal(name)
        };
        match teardown {
            Ok(t) => {
                t.run();
                Ok(())
            }
            Err(e) => {
                if let Err(redo) = imp.create_network(&dirs, &net) {
                    eprintln!("tapnet: network {name}: undo remove: {redo}");
                }
                Err(e)
            }
        }
    }

    /// A sandbox on a remote network (which is its only network: a remote network is not
    /// combined with others).
    pub(super) fn sandbox_create_remote(&self, req: SandboxCreate) -> Result<Value> {
        let (reserved, dirs) = {
            let mut inner = self.lock();
            let reserved = inner.reserve_sandbox(&req)?;
            (reserved, inner.plugin_dirs.clone())
        };
        // Drop the reservation, the namespaces and the plugin's side of `sb`'s endpoints.
        let abandon = |this: &Self, sb: &Sandbox| this.abandon_sandbox(sb, true);
        if let Err(e) = reserved.make_namespaces() {
            let mut bare = reserved.sb.clone();
            bare.endpoints.clear();
            abandon(self, &bare);
            return Err(e);
        }
        let netns = reserved.netns.clone();
        let (mut sb, sockets, setup) = (reserved.sb, reserved.sockets, reserved.setup);
        let mut wired = Vec::new();
        for ep in &mut sb.endpoints {
            let Some(net) = self.lock().state.network(&ep.network).cloned() else {
                continue;
            };
            match drivers::of(net.driver).setup_endpoint_outside(&dirs, &netns, ep, &net) {
                Ok(mac) => {
                    if mac.is_some() {
                        ep.mac = mac;
                    }
                    wired.push(ep.clone());
                }
                Err(e) => {
                    // The plugin undid its side of this endpoint; earlier ones are undone here.
                    let mut partial = sb.clone();
                    partial.endpoints = wired;
                    abandon(self, &partial);
                    return Err(e);
                }
            }
        }
        // Routes none (the plugin's Join set them) unless another driver's network sets them.
        if let Err(e) = setup.set_routes() {
            abandon(self, &sb);
            return Err(e);
        }
        let committed = {
            let mut inner = self.lock();
            inner.commit_sandbox(&sb).map(|_| {
                inner.creating_sandboxes.retain(|s| s.name != sb.name);
                inner.publish(&sb, sockets);
                inner.sandbox_view(&sb.name)
            })
        };
        match committed {
            Ok(view) => value(&view?),
            Err(e) => {
                abandon(self, &sb);
                Err(e)
            }
        }
    }

    /// `network connect` of a remote network: the endpoint planned and the sandbox reserved
    /// (no other change to it meanwhile) under the lock; CreateEndpoint, Join and the link
    /// moved in without it; committed under it, or Leave and DeleteEndpoint sent.
    pub(super) fn network_connect_remote(
        &self,
        network: &str,
        sandbox: &str,
        ips: Wanted<'_>,
        aliases: Vec<String>,
    ) -> Result<Value> {
        let (ep, net, dirs, netns, before, after) = {
            let mut inner = self.lock();
            let (sb, net, ep) = inner.plan_connect(network, sandbox, ips, aliases)?;
            let (before, after) = inner.plan_connect_setup(&sb, &ep);
            // The reservation: the sandbox with only the new endpoint, so that plans see its
            // address taken and other changes to the sandbox wait.
            let mut reserved = sb.clone();
            reserved.endpoints = vec![ep.clone()];
            inner.creating_sandboxes.push(reserved);
            let netns = inner.dirs.netns_path(sandbox);
            (ep, net, inner.plugin_dirs.clone(), netns, before, after)
        };
        let release = |this: &Self| {
            this.lock().creating_sandboxes.retain(|s| s.name != sandbox);
        };
        let mut ep = ep;
        match drivers::of(net.driver).setup_endpoint_outside(&dirs, &netns, &ep, &net) {
            Ok(mac) => {
                if mac.is_some() {
                    ep.mac = mac;
                }
            }
            Err(e) => {
                release(self);
                return Err(e);
            }
        }
        // The plugin's Join set the routes (a sandbox on a remote network has none of
        // tapnet's): only the /etc files are written, before the commit.
        after.refresh_etc(sandbox);
        let (committed, teardown) = {
            let mut inner = self.lock();
            let mut teardown = Teardown::new(inner.dp.clone());
            let committed = inner
                .sandbox(sandbox)
                .cloned()
                .and_then(|sb| inner.commit_connect(&sb, ep.clone(), &mut teardown))
                .map(|_| inner.sandbox_view(sandbox));
            if committed.is_ok() {
                inner.creating_sandboxes.retain(|s| s.name != sandbox);
            }
            (committed, teardown)
        };
        teardown.run();
        match committed {
            Ok(view) => value(&view?),
            Err(e) => {
                // The plugin hears Leave and DeleteEndpoint, by the driver, unlocked.
                let (unwired, dp) = {
                    let mut inner = self.lock();
                    let unwired =
                        drivers::of(net.driver).take_endpoint(&mut inner.ctx(), sandbox, &ep, &net);
                    (unwired, inner.dp.clone())
                };
                unwired.run(&dp);
                // Still reserved: the routes and files as they were, then the name is free.
                before.restore(sandbox);
                release(self);
                Err(e)
            }
        }
    }
}
