//! Joining: JoinGroup, the leader's assignment (cut to the partitions in
//! fresh metadata, and under cooperative rebalancing without the partitions
//! that move), and SyncGroup.

use super::*;

impl<A: GroupApi> Coordinator<A> {
    /// JoinGroup and SyncGroup, then stable, or joining again at once when
    /// a cooperative rebalance needs its second round.
    pub(super) async fn join(&mut self, reason: &str) -> Result<(), GroupError> {
        if self.protocol == RebalanceProtocol::Eager && !self.owned.is_empty() {
            let all = self.owned.iter().cloned().collect();
            self.revoke(all).await;
        }
        self.set_phase(MemberPhase::Joining);
        tracing::info!(group = %self.group(), why = reason, "joining");
        let subscription = Subscription {
            topics: self.config.topics.clone(),
            user_data: None,
            owned_partitions: self.owned.iter().cloned().collect(),
            generation: self.membership.generation_id(),
            rack_id: self.config.client_rack.clone(),
        }
        .encode();
        let protocols = self
            .config
            .assignors
            .iter()
            .map(|a| (a.name().to_string(), subscription.clone()))
            .collect::<Vec<_>>();
        let mut attempt = 0;
        let joined = loop {
            attempt += 1;
            let api = Arc::clone(&self.api);
            let request = api.join_group(JoinParams {
                member_id: self.membership.member_id().to_string(),
                group_instance_id: self.config.group_instance_id.clone(),
                session_timeout: self.config.session_timeout,
                rebalance_timeout: self.config.rebalance_timeout,
                protocols: protocols.clone(),
                reason: reason.to_string(),
            });
            let Some(resp) = self.unless_leaving(request).await? else {
                return Ok(());
            };
            match resp.error {
                None => break resp,
                Some(ResponseError::MemberIdRequired) if attempt < 3 => {
                    tracing::debug!(group = %self.group(), member = %resp.member_id, "rejoining with the member id the coordinator gave");
                    self.membership.identified(resp.member_id);
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.membership.forget();
                    return Err(GroupError::broker(
                        "JoinGroup",
                        ResponseError::UnknownMemberId,
                        None,
                    ));
                }
                Some(e) => return Err(GroupError::broker("JoinGroup", e, None)),
            }
        };
        self.membership.identified(joined.member_id.clone());
        let generation = Generation {
            generation_id: joined.generation,
            member_id: joined.member_id.clone(),
            group_instance_id: self.config.group_instance_id.clone(),
        };
        let protocol_name = joined.protocol_name.clone().ok_or_else(|| {
            GroupError::malformed("JoinGroup", "no protocol name in a successful response")
        })?;
        let assignor = self
            .config
            .assignors
            .iter()
            .find(|a| a.name() == protocol_name)
            .cloned()
            .ok_or_else(|| {
                GroupError::Fatal(format!(
                    "the group chose assignor {protocol_name:?}, which this member does not offer"
                ))
            })?;
        self.set_phase(MemberPhase::AwaitingSync);
        self.watched = None;
        let assignments = if joined.leader == joined.member_id {
            let (assignments, watched) = self.lead(assignor.as_ref(), &joined.members).await?;
            self.watched = Some(watched);
            assignments
        } else {
            Vec::new()
        };
        let api = Arc::clone(&self.api);
        let request = api.sync_group(SyncParams {
            generation: generation.clone(),
            protocol_name,
            assignments,
        });
        let Some(bytes) = self.unless_leaving(request).await? else {
            return Ok(());
        };
        let assignment = Assignment::decode(&bytes)
            .map_err(|e| GroupError::malformed("SyncGroup assignment", e.to_string()))?;
        let new = self.within_metadata(assignment.partitions).await;
        self.protocol = assignor.rebalance_protocol();
        self.membership.enter(generation.clone());
        self.last_heartbeat_ok = Instant::now();
        self.joins += 1;
        let revoked: Vec<_> = self.owned.difference(&new).cloned().collect();
        let added: Vec<_> = new.difference(&self.owned).cloned().collect();
        self.state = if revoked.is_empty() {
            State::Stable
        } else {
            // Cooperative: give up what moves, then rejoin so the group can
            // hand it to its new owner.
            self.revoke(revoked).await;
            State::Join {
                reason: "cooperative rebalance: partitions released".into(),
            }
        };
        self.backoff.reset();
        self.owned = new;
        tracing::info!(
            group = %self.group(), generation = generation.generation_id, member = %generation.member_id,
            assigned = self.owned.len(), added = added.len(), "joined"
        );
        self.publish();
        self.emit(GroupEvent::Assigned {
            added,
            assignment: self.owned.iter().cloned().collect(),
            generation,
        });
        Ok(())
    }

    /// The partitions of an assignment that exist: of a subscribed topic,
    /// below its partition count in fresh metadata. A coordinator (or a
    /// leader) naming a million partitions of a three-partition topic gets
    /// three workers, not a million; what is left out is logged. Without
    /// metadata (the lookup failed) only the topics are checked.
    pub(super) async fn within_metadata(
        &self,
        assigned: Vec<TopicPartition>,
    ) -> BTreeSet<TopicPartition> {
        let named = assigned.len();
        let subscribed = assigned
            .into_iter()
            .filter(|tp| self.config.topics.contains(&tp.topic));
        let kept: BTreeSet<TopicPartition> = match self
            .api
            .partition_counts(&self.config.topics)
            .await
        {
            Ok(counts) => subscribed
                .filter(|tp| {
                    counts
                        .get(&tp.topic)
                        .is_some_and(|n| (0..*n).contains(&tp.partition))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(group = %self.group(), error = %e, "cannot check the assignment against metadata");
                subscribed.collect()
            }
        };
        if kept.len() < named {
            tracing::warn!(
                group = %self.group(), named, kept = kept.len(),
                "the assignment names partitions that are not subscribed or do not exist; they are left out"
            );
        }
        kept
    }

    /// Awaits a group request (JoinGroup, SyncGroup: they may take up to
    /// the rebalance timeout) unless a Leave comes first: then the request
    /// is abandoned, the member leaves next, and `None` is returned. Other commands change nothing while joining.
    pub(super) async fn unless_leaving<T>(
        &mut self,
        request: impl Future<Output = Result<T, GroupError>>,
    ) -> Result<Option<T>, GroupError> {
        let mut request = std::pin::pin!(request);
        loop {
            tokio::select! {
                answer = &mut request => return answer.map(Some),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Leave(done)) => {
                        self.leave_next(Some(done));
                        return Ok(None);
                    }
                    None => {
                        self.leave_next(None);
                        return Ok(None);
                    }
                    Some(
                        Command::Rejoin(_)
                        | Command::CommitRefused { .. }
                        | Command::StepAside(_)
                        | Command::Heartbeat(_),
                    ) => {}
                }
            }
        }
    }

    /// The leader's work: decode subscriptions, look up partitions, assign;
    /// with what was assigned over, to watch.
    pub(super) async fn lead(
        &self,
        assignor: &dyn Assignor,
        members: &[(String, Option<String>, Bytes)],
    ) -> Result<(Vec<(String, Bytes)>, Watched), GroupError> {
        let members: Vec<MemberSubscription> = members
            .iter()
            .map(|(id, instance, meta)| {
                let subscription = Subscription::decode(meta).unwrap_or_else(|e| {
                    // One member's bad metadata must not stop the group: it
                    // gets nothing this generation.
                    tracing::warn!(group = %self.group(), member = %id, error = %e, "undecodable subscription");
                    Subscription::default()
                });
                MemberSubscription {
                    member_id: id.clone(),
                    group_instance_id: instance.clone(),
                    subscription,
                }
            })
            .collect();
        let topics: Vec<String> = members
            .iter()
            .flat_map(|m| m.subscription.topics.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let counts = self.api.partition_counts(&topics).await?;
        let mut assignment = assignor.assign(&members, &counts);
        if assignor.rebalance_protocol() == RebalanceProtocol::Cooperative {
            withhold_moving_partitions(&members, &mut assignment);
        }
        tracing::info!(group = %self.group(), members = members.len(), topics = topics.len(), assignor = assignor.name(), "assigned partitions as leader");
        let assignments = assignment
            .into_iter()
            .map(|(member, partitions)| {
                let bytes = Assignment {
                    partitions,
                    user_data: None,
                }
                .encode();
                (member, bytes)
            })
            .collect();
        let watched = Watched {
            topics,
            counts,
            next_check: Instant::now() + self.config.metadata_max_age,
        };
        Ok((assignments, watched))
    }
}

/// Cooperative rebalancing (KIP-429): a partition moving from one member to
/// another is left out of this generation; its owner revokes it, rejoins, and
/// the next generation hands it over.
pub(crate) fn withhold_moving_partitions(
    members: &[MemberSubscription],
    assignment: &mut BTreeMap<String, Vec<TopicPartition>>,
) {
    let mut owner: BTreeMap<&TopicPartition, Option<&str>> = BTreeMap::new();
    for m in members {
        for tp in &m.subscription.owned_partitions {
            owner
                .entry(tp)
                .and_modify(|o| *o = None) // claimed twice: nobody's
                .or_insert(Some(m.member_id.as_str()));
        }
    }
    for (member, partitions) in assignment.iter_mut() {
        partitions.retain(|tp| match owner.get(tp) {
            Some(Some(o)) => *o == member.as_str(),
            _ => true,
        });
    }
}
