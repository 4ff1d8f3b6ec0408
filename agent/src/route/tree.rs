//! One service's learned route tree: the inference half of [`super::Router`].
//!
//! Input: a path's [`Token`]s and the per-position literal limit. Output: the route template the
//! path falls under, shared as an `Arc<str>` so a hit allocates nothing.
//!
//! Invariant: every node lies on the way to at least one route (a node holding a template), so a
//! tree with `r` routes has at most `1 + r × (MAX_DEPTH_SEGMENTS + 1)` nodes.

use std::collections::BTreeMap;
use std::mem;
use std::sync::Arc;

use super::segment::{tokens, Token};
use super::{COLLAPSED_SEGMENT, ID_SEGMENT};

/// One position in the tree. `BTreeMap` keeps merges (and so outputs) independent of hashing.
#[derive(Debug, Default)]
struct Node {
    /// Children keyed by literal segment; always empty once `collapsed`.
    literals: BTreeMap<Box<str>, Node>,
    /// The `{id}` child: segments recognised as identifiers.
    id: Option<Box<Node>>,
    /// The `{*}` child: literals of a collapsed position, and the tail of too-deep paths.
    wildcard: Option<Box<Node>>,
    /// This position saw more than the allowed distinct literals; all literals go to `wildcard`.
    collapsed: bool,
    /// The route template ending here, if a request path ended here.
    route: Option<Arc<str>>,
}

impl Node {
    /// Moves every literal child into the `{*}` child and marks this position collapsed.
    fn collapse(&mut self, max_distinct: usize) {
        self.collapsed = true;
        let literals = mem::take(&mut self.literals);
        let wildcard = self.wildcard.get_or_insert_with(Box::default);
        for (_, child) in literals {
            wildcard.merge(child, max_distinct);
        }
    }

    /// Merges `other` (a subtree at the same position) into `self`. Route texts are left stale;
    /// [`Node::retemplate`] fixes them.
    fn merge(&mut self, other: Node, max_distinct: usize) {
        if self.route.is_none() {
            self.route = other.route;
        }
        merge_child(&mut self.id, other.id, max_distinct);
        merge_child(&mut self.wildcard, other.wildcard, max_distinct);
        if other.collapsed && !self.collapsed {
            self.collapse(max_distinct);
        }
        for (segment, child) in other.literals {
            if self.collapsed {
                self.wildcard
                    .get_or_insert_with(Box::default)
                    .merge(child, max_distinct);
            } else if let Some(existing) = self.literals.get_mut(&segment) {
                existing.merge(child, max_distinct);
            } else {
                self.literals.insert(segment, child);
                if self.literals.len() > max_distinct {
                    self.collapse(max_distinct);
                }
            }
        }
    }

    fn count(&self, f: &impl Fn(&Node) -> usize) -> usize {
        f(self)
            + self.literals.values().map(|c| c.count(f)).sum::<usize>()
            + self.id.as_ref().map_or(0, |c| c.count(f))
            + self.wildcard.as_ref().map_or(0, |c| c.count(f))
    }

    fn retemplate(&mut self, prefix: &mut String) {
        if let Some(route) = &mut self.route {
            let text = if prefix.is_empty() {
                "/"
            } else {
                prefix.as_str()
            };
            if **route != *text {
                *route = Arc::from(text);
            }
        }
        let len = prefix.len();
        for (segment, child) in &mut self.literals {
            push_segment(prefix, segment);
            child.retemplate(prefix);
            prefix.truncate(len);
        }
        for (segment, child) in [
            (ID_SEGMENT, &mut self.id),
            (COLLAPSED_SEGMENT, &mut self.wildcard),
        ] {
            if let Some(child) = child {
                push_segment(prefix, segment);
                child.retemplate(prefix);
                prefix.truncate(len);
            }
        }
    }
}

fn merge_child(into: &mut Option<Box<Node>>, other: Option<Box<Node>>, max_distinct: usize) {
    match (into.as_mut(), other) {
        (Some(into), Some(other)) => into.merge(*other, max_distinct),
        (None, other) => *into = other,
        (Some(_), None) => {}
    }
}

fn push_segment(template: &mut String, segment: &str) {
    template.push('/');
    template.push_str(segment);
}

/// The routes learned for one service.
#[derive(Debug, Default)]
pub(super) struct Tree {
    root: Node,
    routes: usize,
}

impl Tree {
    /// The existing route `path` falls under, without changing anything.
    pub(super) fn lookup(&self, path: &str) -> Option<&Arc<str>> {
        let mut node = &self.root;
        for token in tokens(path) {
            node = match token {
                Token::Id => node.id.as_deref()?,
                Token::Rest => node.wildcard.as_deref()?,
                Token::Literal(_) if node.collapsed => node.wildcard.as_deref()?,
                Token::Literal(segment) => node.literals.get(segment)?,
            };
        }
        node.route.as_ref()
    }

    /// Learns `path` and returns its route. Adds at most one route; collapses the position of a
    /// new literal if it would be the `max_distinct + 1`th there.
    pub(super) fn insert(&mut self, path: &str, max_distinct: usize) -> Arc<str> {
        let mut template = String::new();
        let mut collapsed = false;
        let mut node = &mut self.root;
        for token in tokens(path) {
            node = match token {
                Token::Id => {
                    push_segment(&mut template, ID_SEGMENT);
                    node.id.get_or_insert_with(Box::default)
                }
                Token::Rest => {
                    push_segment(&mut template, COLLAPSED_SEGMENT);
                    node.wildcard.get_or_insert_with(Box::default)
                }
                Token::Literal(segment) => {
                    if !node.collapsed
                        && !node.literals.contains_key(segment)
                        && node.literals.len() >= max_distinct
                    {
                        node.collapse(max_distinct);
                        collapsed = true;
                    }
                    if node.collapsed {
                        push_segment(&mut template, COLLAPSED_SEGMENT);
                        node.wildcard.get_or_insert_with(Box::default)
                    } else {
                        push_segment(&mut template, segment);
                        node.literals.entry(segment.into()).or_default()
                    }
                }
            };
        }
        if template.is_empty() {
            template.push('/');
        }
        let added = node.route.is_none();
        // After a collapse, a merged-in route here still has its old text: replace it.
        let route = match &mut node.route {
            Some(route) if **route == *template => Arc::clone(route),
            slot => Arc::clone(slot.insert(Arc::from(template))),
        };
        if collapsed {
            // Merged subtrees still carry their old texts, and merging may have joined routes.
            self.root.retemplate(&mut String::new());
            self.routes = self.root.count(&|n| usize::from(n.route.is_some()));
        } else if added {
            self.routes += 1;
        }
        route
    }

    /// How many distinct routes this tree holds.
    pub(super) fn routes(&self) -> usize {
        self.routes
    }

    /// How many nodes this tree holds (memory accounting in tests).
    #[cfg(test)]
    pub(super) fn nodes(&self) -> usize {
        self.root.count(&|_| 1)
    }
}
