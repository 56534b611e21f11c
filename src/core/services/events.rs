use std::sync::Arc;

use crate::core::events::{EventFilter, StoredEvent};
use crate::core::pagination::{Page, PageRequest, SortValue};
use crate::core::ports::EventLog;
use crate::core::{Result, TenantId};

/// The ordering tag of audit-trail page tokens: outbox order.
pub const EVENT_ORDERING: &str = "events:seq ASC";

/// The tenant's audit trail.
#[derive(Clone)]
pub struct EventService {
    log: Arc<dyn EventLog>,
}

impl EventService {
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log }
    }

    pub async fn list(
        &self,
        tenant: TenantId,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<StoredEvent>> {
        let rows = self.log.list_events(tenant, filter, page).await?;

        Ok(Page::from_overfetch(
            rows,
            page,
            EVENT_ORDERING,
            |e: &StoredEvent| (vec![SortValue::Int(e.sequence)], e.event.id),
        ))
    }
}
