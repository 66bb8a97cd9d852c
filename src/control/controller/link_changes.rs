//! `tapnet link`: impairments and blocks between sandboxes, edited in the model (`links`) and
//! pushed onto the switch ports.

use super::*;

impl Inner {
    /// `link set`, `link show`, `link reset` and `link block`.
    pub(super) fn link_request(&mut self, request: Request) -> Result<Value> {
        match request {
            Request::LinkSet(change) => {
                let restart = change.sandbox.clone();
                self.link_update(Some(&restart), |st| {
                    links::apply_change(st, &change).map(|n| vec![n])
                })
            }
            Request::LinkShow { network } => value(&links::rows(
                &self.state,
                &self.ports,
                &self.dp,
                network.as_deref(),
                |name| self.served_port(name),
            )?),
            Request::LinkReset { network, sandbox } => self.link_update(None, |st| {
                links::reset(st, network.as_deref(), sandbox.as_deref())
            }),
            Request::LinkBlock {
                a,
                b,
                network,
                block,
            } => self.link_update(None, |st| {
                links::set_block(st, &a, &b, network.as_deref(), block)
            }),
            _ => Err(misrouted("link")),
        }
    }

    /// A `tapnet link` change: edit the model, save it, then push it onto the ports. A failed
    /// edit or save leaves the model as it was.
    fn link_update(
        &mut self,
        restart: Option<&str>,
        edit: impl FnOnce(&mut State) -> Result<Vec<String>>,
    ) -> Result<Value> {
        let before = self.state.clone();
        let networks = match edit(&mut self.state).and_then(|n| self.save().map(|_| n)) {
            Ok(n) => n,
            Err(e) => {
                self.state = before;
                return Err(e);
            }
        };
        for net in &networks {
            links::sync(&self.state, &self.ports, &self.dp, net, restart, |name| {
                self.served_port(name)
            });
        }
        value(&links::rows(
            &self.state,
            &self.ports,
            &self.dp,
            None,
            |name| self.served_port(name),
        )?)
    }
}
