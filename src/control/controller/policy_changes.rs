//! `tapnet policy`: a network's rules, edited in the model and pushed to the datapath, where
//! every change of the state (an endpoint joining or leaving, a rule added) resolves the
//! selectors again (`sync_policy`, from `save`).

use super::*;
use crate::api::types::{PolicyRuleView, PolicyView};
use crate::control::policy::{self, Action, MAX_RULES};

impl Inner {
    /// `policy add`, `policy ls` and `policy rm`.
    pub(super) fn policy_request(&mut self, request: Request) -> Result<Value> {
        match request {
            Request::PolicyAdd {
                network,
                rule,
                reset_flows,
            } => {
                self.bridge_net_id(&network)?;
                let net = self.network(&network)?;
                let mut rule = rule;
                if rule.name.is_empty() {
                    rule.name = policy::free_name(net);
                }
                policy::check_rule(&rule)?;
                if net.policy.iter().any(|r| r.name == rule.name) {
                    return Err(Error::conflict(format!(
                        "network {network} has a policy rule {} already",
                        rule.name
                    )));
                }
                if net.policy.len() >= MAX_RULES {
                    return Err(Error::conflict(format!(
                        "network {network} has {MAX_RULES} policy rules, the most it may"
                    )));
                }
                self.policy_update(&network, |rules| rules.push(rule))?;
                if reset_flows {
                    self.sync_policy(Some(&network));
                }
                value(&self.policy_view(&network)?)
            }
            Request::PolicyList { network } => value(&self.policy_view(&network)?),
            Request::PolicyRemove { network, name } => {
                self.bridge_net_id(&network)?;
                if !self
                    .network(&network)?
                    .policy
                    .iter()
                    .any(|r| r.name == name)
                {
                    return Err(Error::not_found(
                        "policy rule",
                        format!("{name} on network {network}"),
                    ));
                }
                self.policy_update(&network, |rules| rules.retain(|r| r.name != name))?;
                value(&self.policy_view(&network)?)
            }
            _ => Err(misrouted("policy")),
        }
    }

    /// Edit a network's rules and save; a failed save leaves the model as it was. Saving
    /// pushes the rules to the datapath.
    fn policy_update(
        &mut self,
        network: &str,
        edit: impl FnOnce(&mut Vec<policy::PolicyRule>),
    ) -> Result<()> {
        let before = self.state.clone();
        let net = self
            .state
            .networks
            .iter_mut()
            .find(|n| n.name == network)
            .ok_or_else(|| Error::not_found("network", network))?;
        edit(&mut net.policy);
        if let Err(e) = self.save() {
            self.state = before;
            self.sync_policy(None);
            return Err(e);
        }
        Ok(())
    }

    /// Push every switched network's policy, its selectors resolved against the endpoints of
    /// now, to the datapath (which does nothing for an unchanged one); `reset` also empties
    /// that network's connection table.
    pub(super) fn sync_policy(&self, reset: Option<&str>) {
        self.sync_policy_on(reset, None);
    }

    /// `sync_policy` for the networks in `only` (all with `None`).
    pub(super) fn sync_policy_on(&self, reset: Option<&str>, only: Option<&HashSet<String>>) {
        for net in super::networks_in(&self.state, only) {
            let Some(&id) = self.nets.get(&net.name) else {
                continue;
            };
            let Some(opts) = net.typed.as_ref().and_then(|t| t.bridge.as_ref()) else {
                continue;
            };
            let remote: Vec<(String, Vec<std::net::IpAddr>)> = self
                .remote_eps
                .values()
                .filter(|r| r.network == net.name)
                .map(|r| {
                    let ips = std::iter::once(r.ip)
                        .chain(r.ipv6.map(std::net::IpAddr::V6))
                        .collect();
                    (r.sandbox.clone(), ips)
                })
                .collect();
            let spec = policy::spec(&self.state, net, opts, &remote);
            self.dp
                .set_policy(id, &spec, reset == Some(net.name.as_str()));
        }
    }

    /// A network's rules with their counters, and its policy's state.
    pub(super) fn policy_view(&self, network: &str) -> Result<PolicyView> {
        let id = self.bridge_net_id(network)?;
        let net = self.network(network)?;
        let opts = crate::drivers::bridge::options_of(net)?;
        let report = self.dp.policy_report(id);
        let table = report.as_ref().and_then(|r| r.table.clone());
        let counted = |name: &str| {
            table
                .as_ref()
                .and_then(|t| t.rules.iter().find(|r| r.spec.name == name))
                .map_or((0, 0), |r| {
                    (
                        r.counters.packets.load(Ordering::Relaxed),
                        r.counters.bytes.load(Ordering::Relaxed),
                    )
                })
        };
        Ok(PolicyView {
            network: net.name.clone(),
            icc: opts.icc,
            default: if opts.policy_default_allow {
                Action::Allow
            } else {
                Action::Deny
            },
            flows: report.as_ref().map_or(0, |r| r.flows as u64),
            max_flows: report.as_ref().map_or(0, |r| r.max_flows as u64),
            drops: report.map(|r| r.drops).unwrap_or_default(),
            rules: net
                .policy
                .iter()
                .map(|r| {
                    let (packets, bytes) = counted(&r.name);
                    PolicyRuleView {
                        rule: r.clone(),
                        packets,
                        bytes,
                    }
                })
                .collect(),
        })
    }
}
