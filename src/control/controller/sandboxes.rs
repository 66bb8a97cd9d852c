//! Sandboxes: create (every endpoint planned and the name reserved under the lock, namespaces
//! and TAPs made without it, attached and committed under it) and the removal bookkeeping.

use super::*;

impl Controller {
    /// `sandbox create`, `ls`, `inspect` and `rm`.
    pub(super) fn sandbox_request(&self, inner: Guard<'_>, request: Request) -> Result<Value> {
        match request {
            Request::SandboxCreate(req)
                if req
                    .networks
                    .iter()
                    .any(|n| drivers::plugin_served(&inner.state, n)) =>
            {
                drop(inner);
                self.sandbox_create_remote(req)
            }
            Request::SandboxCreate(req) if inner.needs_claims(&req.networks) => {
                drop(inner);
                self.sandbox_create_claimed(req)
            }
            Request::SandboxCreate(req) => {
                drop(inner);
                self.sandbox_create(req, None)
            }
            Request::SandboxList => {
                let views: Vec<_> = inner
                    .state
                    .sandboxes
                    .iter()
                    .map(|s| inner.view_of(s))
                    .collect();
                value(&views)
            }
            Request::SandboxInspect { name } => {
                let mut view = inner.sandbox_view(&name)?;
                let queries = inner.sandbox_queries(&name)?;
                drop(inner);
                queries.fill_sandbox(&mut view);
                value(&view)
            }
            Request::SandboxRemove { name, force } => {
                drop(inner);
                self.sandbox_remove(&name, force)?;
                Ok(json!({"removed": name}))
            }
            _ => Err(misrouted("sandbox")),
        }
    }
}

/// A sandbox create planned and reserved under the lock (in `creating_sandboxes`): what the
/// part without the lock makes.
pub(super) struct Reserved {
    pub(super) sb: Sandbox,
    pub(super) sockets: Vec<HostSocket>,
    /// Its network namespace's pin (the daemon's own namespace for a host-network sandbox).
    pub(super) netns: std::path::PathBuf,
    /// Its UTS namespace's pin and hostname; none for a host-network sandbox.
    uts: Option<(std::path::PathBuf, String)>,
    /// Each endpoint's network id (a network removed and made again meanwhile is another) and
    /// device, in the order of `sb.endpoints`.
    devices: Vec<(String, DevicePlan)>,
    /// Its /etc files and default routes.
    pub(super) setup: SandboxSetup,
}

impl Reserved {
    /// Write the /etc files and make the namespaces (slow: unshare and bind mounts on a
    /// thread). On failure the caller's `abandon_sandbox` removes what was made.
    pub(super) fn make_namespaces(&self) -> Result<()> {
        self.setup.write_etc()?;
        match &self.uts {
            None => namespace::pin_current_netns(&self.netns),
            Some((uts, hostname)) => {
                namespace::create(&self.netns, Some((uts, hostname)), wiring::loopback_up)
            }
        }
    }

    /// Make every endpoint's device in the namespace; on failure those made go.
    fn make_devices(&mut self) -> Result<Vec<(String, Device)>> {
        std::mem::take(&mut self.devices)
            .into_iter()
            .map(|(id, plan)| Ok((id, plan.make(&self.netns)?)))
            .collect()
    }
}

impl Controller {
    /// `sandbox create` of a sandbox with no plugin's network: planned and reserved under the
    /// lock (with the addresses `won` in the cluster store), its namespaces and TAPs made
    /// without it, and attached and committed under it; on failure what was made goes before
    /// the name is free again.
    pub(super) fn sandbox_create(
        &self,
        req: SandboxCreate,
        won: Option<HashMap<String, std::net::IpAddr>>,
    ) -> Result<Value> {
        let mut reserved = {
            let mut inner = self.lock();
            if let Some(won) = won {
                inner.take_claims(won);
            }
            let reserved = inner.reserve_sandbox(&req);
            inner.preclaimed.clear();
            inner.release_stale_claims();
            reserved?
        };
        // The routes need the devices; all is made before the commit, and goes with the
        // namespace if it fails.
        let devices = match reserved
            .make_namespaces()
            .and_then(|_| reserved.make_devices())
            .and_then(|d| {
                reserved.setup.set_routes()?;
                Ok(d)
            }) {
            Ok(d) => d,
            Err(e) => {
                self.abandon_sandbox(&reserved.sb, false);
                return Err(e);
            }
        };
        let committed = {
            let mut inner = self.lock();
            match inner.commit_created(&reserved.sb, devices) {
                Ok(()) => {
                    inner
                        .creating_sandboxes
                        .retain(|s| s.name != reserved.sb.name);
                    inner.publish(&reserved.sb, reserved.sockets);
                    Ok(inner.sandbox_view(&reserved.sb.name))
                }
                Err(e) => Err((e, inner.teardown_of(&reserved.sb, false))),
            }
        };
        match committed {
            Ok(view) => value(&view?),
            Err((e, teardown)) => {
                teardown.run();
                self.release_sandbox(&reserved.sb.name);
                Err(e)
            }
        }
    }

    /// Undo a reserved sandbox that is not in the model: its ports (`tell`: and a plugin's
    /// endpoints), namespaces and /etc files go, and then its reservation.
    pub(super) fn abandon_sandbox(&self, sb: &Sandbox, tell: bool) {
        let teardown = self.lock().teardown_of(sb, tell);
        teardown.run();
        self.release_sandbox(&sb.name);
    }

    /// Drop the reservation of a sandbox create or connect, and the claims only it held.
    pub(super) fn release_sandbox(&self, name: &str) {
        let mut inner = self.lock();
        inner.creating_sandboxes.retain(|s| s.name != name);
        inner.release_stale_claims();
    }
}

impl Inner {
    /// Plan a new sandbox (`prepare_sandbox`), its devices, /etc files and routes, and reserve
    /// it: its name and addresses are taken, its networks in use.
    pub(super) fn reserve_sandbox(&mut self, req: &SandboxCreate) -> Result<Reserved> {
        let (sb, sockets) = self.prepare_sandbox(req)?;
        let mut devices = Vec::new();
        for ep in &sb.endpoints {
            let net = self.network(&ep.network)?.clone();
            let plan = drivers::of(net.driver).plan_device(&self.ctx(), ep, &net)?;
            devices.push((net.id.clone(), plan));
        }
        let uts = (!drivers::shares_host(&self.state, &sb))
            .then(|| (self.dirs.utsns_path(&sb.name), sb.hostname.clone()));
        self.creating_sandboxes.push(sb.clone());
        Ok(Reserved {
            netns: self.dirs.netns_path(&sb.name),
            uts,
            devices,
            setup: self.plan_setup(&sb),
            sb,
            sockets,
        })
    }

    /// Attach a reserved sandbox's devices and add it to the model, if every network it was
    /// planned on is still there; on failure the caller's teardown removes what was attached.
    fn commit_created(&mut self, sb: &Sandbox, devices: Vec<(String, Device)>) -> Result<()> {
        for (ep, (id, device)) in sb.endpoints.iter().zip(devices) {
            let net = self.network_as_planned(&ep.network, &id, &format!("sandbox {}", sb.name))?;
            drivers::of(net.driver).attach_endpoint(&mut self.ctx(), &sb.name, ep, &net, device)?;
            links::sync_around(
                &self.state,
                &self.ports,
                &self.dp,
                &net.name,
                &sb.name,
                |n| self.served_port(n),
            );
        }
        self.commit_sandbox(sb)
    }

    /// Network `name` with the id it had when a request for `what` (a sandbox, an attachment)
    /// was planned: gone (or made again) meanwhile, the request fails.
    pub(super) fn network_as_planned(&self, name: &str, id: &str, what: &str) -> Result<Network> {
        match self.state.network(name) {
            Some(net) if net.id == id && !self.deleting_networks.contains(name) => Ok(net.clone()),
            _ => Err(Error::conflict(format!(
                "network {name} was removed while {what} was being set up on it"
            ))),
        }
    }

    /// A new sandbox checked and planned (every endpoint's address and interface) and its host
    /// ports bound; nothing made, not in the model.
    pub(super) fn prepare_sandbox(
        &mut self,
        req: &SandboxCreate,
    ) -> Result<(Sandbox, Vec<HostSocket>)> {
        validate_name("sandbox", &req.name).map_err(Error::Invalid)?;
        if self.planning_state().sandbox(&req.name).is_some() {
            return Err(Error::exists("sandbox", &req.name));
        }
        // Ports and sandboxes share the gateway's names.
        if self.state.vm_ports.iter().any(|p| p.name == req.name) {
            return Err(Error::conflict(format!(
                "sandbox {}: a port (tapnet port add) has that name",
                req.name
            )));
        }
        if self.removing.contains(&req.name) {
            return Err(Error::conflict(format!(
                "sandbox {} is still being removed; try again",
                req.name
            )));
        }
        let networks = if req.networks.is_empty() {
            vec!["bridge".to_string()]
        } else {
            req.networks.clone()
        };
        let mut seen = HashSet::new();
        let mut nets = Vec::new();
        for name in &networks {
            if !seen.insert(name.as_str()) {
                return Err(Error::conflict(format!(
                    "network {name} is given twice: a sandbox joins a network once"
                )));
            }
            nets.push(self.network(name)?.clone());
        }
        let special = nets.iter().find(|n| !drivers::of(n.driver).combines());
        if let Some(n) = special
            && nets.len() > 1
        {
            return Err(Error::invalid(format!(
                "network {} (driver {}) cannot be combined with other networks",
                n.name,
                n.driver.name()
            )));
        }
        let host_mode = special.is_some_and(|n| drivers::of(n.driver).shares_host());
        let hostname = match (&req.hostname, host_mode) {
            (Some(_), true) => {
                return Err(Error::invalid(
                    "--hostname cannot be set on a sandbox that shares the host's network",
                ));
            }
            (Some(h), false) => {
                validate::hostname(h)?;
                h.clone()
            }
            (None, true) => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            (None, false) => req.name.clone(),
        };
        let mut sb = Sandbox {
            name: req.name.clone(),
            id: new_id()?,
            hostname: hostname.clone(),
            endpoints: Vec::new(),
            ports: Vec::new(),
        };
        // Plan every endpoint (addresses, interface names) before creating anything.
        for (i, net) in nets.iter().enumerate() {
            let ips = if i == 0 {
                (req.ip.as_deref(), req.ip6.as_deref())
            } else {
                (None, None)
            };
            let ep = self.plan_endpoint(&sb, net, ips, Vec::new())?;
            sb.endpoints.push(ep);
        }
        if req.ip.is_some() && !drivers::of(nets[0].driver).switched() {
            return Err(Error::invalid("--ip needs a bridge network"));
        }
        sb.ports = self.plan_ports(&req.publish, &nets)?;
        // Bind the host side before creating anything: a taken port fails the request cleanly.
        let host_sockets = sb
            .ports
            .iter()
            .map(ports::bind)
            .collect::<Result<Vec<_>>>()?;
        Ok((sb, host_sockets))
    }

    /// Add a wired sandbox, its routes set, to the model and the state file.
    pub(super) fn commit_sandbox(&mut self, sb: &Sandbox) -> Result<()> {
        self.state.sandboxes.push(Arc::new(sb.clone()));
        if let Err(e) = self.save() {
            self.state.sandboxes.pop();
            return Err(e);
        }
        Ok(())
    }

    /// What removing a sandbox's ports, publications and namespaces takes (not its model
    /// entry): the handles come out of the controller's maps now, the waiting comes later.
    pub(super) fn teardown_of(&mut self, sb: &Sandbox, endpoints: bool) -> Teardown {
        let mut teardown = Teardown::new(self.dp.clone());
        teardown.unpublish = self.take_publications(&sb.name);
        for ep in &sb.endpoints {
            // A remote plugin is told without the controller's lock, when the teardown runs.
            let unwired = self.take_endpoint(&sb.name, ep, endpoints);
            teardown.endpoints.push(unwired);
        }
        teardown.pins = vec![
            self.dirs.netns_path(&sb.name),
            self.dirs.utsns_path(&sb.name),
        ];
        teardown.etc = vec![(self.dirs.clone(), sb.name.clone())];
        teardown
    }

    /// Remove a sandbox from the model and the state file; the teardown releases the rest.
    pub(super) fn commit_sandbox_removal(&mut self, name: &str) -> Result<Teardown> {
        let index = (self.state.sandboxes.position(name))
            .ok_or_else(|| Error::not_found("sandbox", name))?;
        let sb = self.state.sandboxes.remove(index);
        let forgotten = links::forget(&mut self.state, name, None);
        if let Err(e) = self.save() {
            self.state.sandboxes.insert(index, sb);
            links::remember(&mut self.state, forgotten);
            return Err(e);
        }
        self.sync_forgotten(&forgotten);
        Ok(self.teardown_of(&sb, true))
    }

    /// Network and UTS namespaces of a sandbox that has its own, with its /etc files. (Its
    /// mount view is made by each `tapnet exec`.) On failure nothing is left behind.
    pub(super) fn create_namespaces(&self, sb: &Sandbox) -> Result<()> {
        let made = etc_files::write(&self.dirs, &self.state, sb).and_then(|_| {
            namespace::create(
                &self.dirs.netns_path(&sb.name),
                Some((&self.dirs.utsns_path(&sb.name), &sb.hostname)),
                wiring::loopback_up,
            )
        });
        if made.is_err() {
            etc_files::remove(&self.dirs, &sb.name);
        }
        made
    }

    /// Rewrite a live sandbox's /etc/hosts and /etc/resolv.conf after its networks changed.
    pub(super) fn refresh_etc(&self, sb: &Sandbox) {
        if !drivers::shares_host(&self.state, sb)
            && let Err(e) = etc_files::write(&self.dirs, &self.state, sb)
        {
            eprintln!("tapnet: sandbox {}: {e}", sb.name);
        }
    }
}
