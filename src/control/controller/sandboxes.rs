//! Sandboxes: create (every endpoint planned first), bring up, and the removal bookkeeping.

use super::*;

impl Controller {
    /// `sandbox create`, `ls`, `inspect` and `rm`.
    pub(super) fn sandbox_request(&self, mut inner: Guard<'_>, request: Request) -> Result<Value> {
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
                let r = inner.sandbox_create(req);
                inner.release_stale_claims();
                let name = r?;
                value(&inner.sandbox_view(&name)?)
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

impl Inner {
    pub(super) fn sandbox_create(&mut self, req: SandboxCreate) -> Result<String> {
        let (mut sb, host_sockets) = self.prepare_sandbox(&req)?;
        if let Err(e) = self.bring_up(&mut sb) {
            // A driver's failed setup undid its own part (a remote plugin's endpoint).
            self.teardown_of(&sb, false).run();
            return Err(e);
        }
        self.publish(&sb, host_sockets);
        Ok(sb.name)
    }

    /// A new sandbox checked and planned (every endpoint's address and interface), its host
    /// ports bound and its namespaces made; not wired, not in the model. On failure nothing
    /// is left.
    pub(super) fn prepare_sandbox(
        &mut self,
        req: &SandboxCreate,
    ) -> Result<(Sandbox, Vec<HostSocket>)> {
        validate_name("sandbox", &req.name).map_err(Error::Invalid)?;
        if self.planning_state().sandbox(&req.name).is_some() {
            return Err(Error::exists("sandbox", &req.name));
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
        if host_mode {
            namespace::pin_current_netns(&self.dirs.netns_path(&sb.name))?;
        } else {
            self.create_namespaces(&sb)?;
        }
        Ok((sb, host_sockets))
    }

    /// Wire every endpoint (each takes the MAC its driver gave it) and add the sandbox.
    pub(super) fn bring_up(&mut self, sb: &mut Sandbox) -> Result<()> {
        for i in 0..sb.endpoints.len() {
            let Some(net) = self.state.network(&sb.endpoints[i].network).cloned() else {
                continue;
            };
            let wired = self.wire(sb, &sb.endpoints[i].clone(), &net)?;
            sb.endpoints[i] = wired;
        }
        self.commit_sandbox(sb)
    }

    /// Add a wired sandbox to the model: its default route, the state file.
    pub(super) fn commit_sandbox(&mut self, sb: &Sandbox) -> Result<()> {
        self.sync_default_route(sb)?;
        self.state.sandboxes.push(sb.clone());
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
        let index = self
            .state
            .sandboxes
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Error::not_found("sandbox", name))?;
        let sb = self.state.sandboxes.remove(index);
        let forgotten = links::forget(&mut self.state, name, None);
        if let Err(e) = self.save() {
            self.state.sandboxes.insert(index, sb);
            links::remember(&mut self.state, forgotten);
            return Err(e);
        }
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
