//! A Deployment's ReplicaSets: which are its own (adopting and releasing as Kubernetes'
//! `ReplicaSetControllerRefManager`), which one is new (same template, ignoring the hash
//! label), and the creation of the new one with the next revision.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::rollout::{desired, fenceposts};
use super::{Context, DESIRED_REPLICAS, Error, MAX_REPLICAS, REVISION, hash};
use crate::controllers::replicaset::pods::{controller_of, controller_ref, labels};

/// The ReplicaSets of one Deployment, split into the new one (current template) and old ones.
pub struct Sets {
    pub new: Option<ReplicaSet>,
    /// Oldest first.
    pub old: Vec<ReplicaSet>,
}

impl Sets {
    pub fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new.as_ref()).collect()
    }
}

/// This Deployment's ReplicaSets: owned ones that match, plus matching orphans (adopted);
/// owned ones that no longer match are released.
pub async fn claim(
    ctx: &Context,
    d: &Deployment,
    selector: &crate::selector::LabelSelector,
) -> Result<Sets, Error> {
    let namespace = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut owned = Vec::new();
    for rs in ctx.written.view(ctx.replicasets.state()) {
        if rs.namespace().as_deref() != Some(namespace.as_str()) {
            continue;
        }
        let matches = selector.matches(&labels(&rs.metadata));
        let refs = rs.metadata.owner_references.clone().unwrap_or_default();
        match controller_of(&rs.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches {
                    owned.push((*rs).clone());
                } else {
                    let kept: Vec<_> = refs.into_iter().filter(|r| r.uid != uid).collect();
                    set_owners(&api, &rs, &kept).await?;
                }
            }
            Some(_) => {}
            None if matches && rs.metadata.deletion_timestamp.is_none() => {
                let mut refs = refs;
                refs.push(controller_ref(d.meta(), "apps/v1", "Deployment"));
                owned.push(set_owners(&api, &rs, &refs).await?);
            }
            None => {}
        }
    }
    owned.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            a.name_any(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.name_any(),
            ))
    });
    let template = d.spec.clone().unwrap_or_default().template;
    let new_index = owned.iter().position(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| hash::equal_ignoring_hash(t, &template))
    });
    let new = new_index.map(|i| owned.remove(i));
    Ok(Sets { new, old: owned })
}

async fn set_owners(
    api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
) -> Result<ReplicaSet, Error> {
    let patch =
        json!({"metadata": {"ownerReferences": refs, "resourceVersion": rs.resource_version()}});
    Ok(api
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

pub fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Finds or (with `create`) makes the new ReplicaSet and brings revisions up to date
/// (`getAllReplicaSetsAndSyncRevision`).
pub async fn sync_revision(
    ctx: &Context,
    d: &Deployment,
    sets: &mut Sets,
    create_with: Option<i32>,
) -> Result<(), Error> {
    let namespace = d.namespace().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let max_old = sets
        .old
        .iter()
        .map(|rs| revision_of(&rs.metadata))
        .max()
        .unwrap_or(0);
    let revision = (max_old + 1).to_string();
    if let Some(new) = &sets.new {
        if revision_of(&new.metadata) < max_old + 1 {
            let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
            let updated = api
                .patch(
                    &new.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            ctx.written.wrote(updated.clone());
            sets.new = Some(updated);
        }
    } else if let Some(replicas) = create_with {
        sets.new = Some(create_new(ctx, d, &api, replicas, &revision).await?);
    } else {
        return Ok(());
    }
    let current = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION));
    if current != Some(&revision) {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
        deployments
            .patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

/// Creates `<deployment>-<hash>`; an existing one with our template is taken instead.
async fn create_new(
    ctx: &Context,
    d: &Deployment,
    api: &Api<ReplicaSet>,
    replicas: i32,
    revision: &str,
) -> Result<ReplicaSet, Error> {
    let spec = d.spec.clone().unwrap_or_default();
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = hash::template_hash(&spec.template, collisions);
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(hash::LABEL.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(hash::LABEL.into(), hash.clone());
    let name = format!("{}-{hash}", d.name_any());
    let (surge, _) = fenceposts(d);
    let rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: d.namespace(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(
                [
                    (REVISION.to_owned(), revision.to_owned()),
                    (DESIRED_REPLICAS.to_owned(), desired(d).to_string()),
                    (MAX_REPLICAS.to_owned(), (desired(d) + surge).to_string()),
                ]
                .into(),
            ),
            owner_references: Some(vec![controller_ref(d.meta(), "apps/v1", "Deployment")]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &rs).await {
        Ok(created) => {
            ctx.written.wrote(created.clone());
            Ok(created)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&name).await?;
            let ours =
                controller_of(&existing.metadata).is_some_and(|o| Some(&o.uid) == d.uid().as_ref());
            let same = existing
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| hash::equal_ignoring_hash(t, &spec.template));
            if ours && same {
                return Ok(existing);
            }
            // Kubernetes' answer to a collision: count it, so the next hash differs.
            let deployments: Api<Deployment> =
                Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
            let patch = json!({"status": {"collisionCount": collisions.unwrap_or(0) + 1}});
            deployments
                .patch_status(
                    &d.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            Err(Error::Collision(name))
        }
        Err(err) => Err(err.into()),
    }
}
