//! The catalog contract (see `host/src/catalog.rs`), run against SQLite and a real PostgreSQL.

use std::sync::Arc;

use chrono::Utc;
use lake_host::audit::{AuditQuery, Decision, NewAuditEntry};
use lake_host::catalog::prelude::*;
use lake_host::catalog::{
    CatalogDump, CatalogError, Count, DatasetId, DatasetStatus, FileRecord, JobStatus, NewDataset,
    NewJob, SearchQuery,
};
use lake_host::layers::Layer;
use lake_host::provenance::{Action, Direction, NewProvenance};
use serde_json::json;

fn new_ds(name: &str, source: &str, layer: Layer) -> NewDataset {
    let id = DatasetId::new();
    NewDataset {
        id,
        name: name.to_owned(),
        source: source.to_owned(),
        external_id: None,
        layer,
        bucket: format!("lake-{layer}"),
        prefix: format!("{source}/{id}/"),
        metadata: json!({"source": source, "date": "2026-11-22", "version": "1"}),
        tags: vec![],
        status: DatasetStatus::Ready,
        promoted_from: None,
    }
}

fn file(name: &str, size: u64) -> FileRecord {
    FileRecord {
        name: name.to_owned(),
        size,
        sha256: lake_host::blob::Sha256::of(name.as_bytes()).to_hex(),
        content_type: "text/csv".into(),
        created_at: Utc::now(),
    }
}

fn prov(action: Action, inputs: Vec<DatasetId>, outputs: Vec<DatasetId>) -> NewProvenance {
    NewProvenance {
        action,
        inputs,
        outputs,
        parameters: json!({"k": 1}),
        notes: Some("n".into()),
        actor: Some("ana".into()),
        actor_token: Some("0190aa".into()),
        reason: Some("because".into()),
    }
}

pub async fn insert_and_get(c: Arc<dyn Catalog>) {
    let mut n = new_ds("GSE16 series", "geo", Layer::Raw);
    n.external_id = Some("GSE16".into());
    n.tags = vec!["geo".into(), "human".into()];
    n.metadata =
        json!({"organism": "Homo sapiens", "source": "geo", "date": "2026-01-01", "version": "2"});
    let files = [file("a.csv", 10), file("b.csv", 32)];
    let d = c
        .insert_dataset(
            &n,
            &files,
            Some(&prov(Action::Registration, vec![], vec![n.id])),
        )
        .await
        .expect("insert");
    assert_eq!(d.id, n.id);
    assert_eq!((d.file_count, d.total_size), (2, 42));
    let got = c.get_dataset(n.id).await.expect("get");
    assert_eq!(got.name, "GSE16 series");
    assert_eq!(got.external_id.as_deref(), Some("GSE16"));
    assert_eq!(got.tags, ["geo", "human"]);
    assert_eq!(got.metadata["organism"], "Homo sapiens");
    assert_eq!(got.layer, Layer::Raw);
    assert_eq!(got.location, format!("lake-raw/geo/{}/", n.id));
    let listed = c.list_files(n.id).await.expect("files");
    assert_eq!(
        listed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["a.csv", "b.csv"]
    );
    assert_eq!(listed[1].sha256, files[1].sha256);
    let entries = c.provenance_of(&[n.id]).await.expect("provenance");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].action, Action::Registration);
    assert_eq!(entries[0].outputs, [n.id]);
    // Who acted, through what, and why, come back as recorded.
    assert_eq!(
        (
            entries[0].actor.as_deref(),
            entries[0].actor_token.as_deref(),
            entries[0].reason.as_deref()
        ),
        (Some("ana"), Some("0190aa"), Some("because"))
    );
}

pub async fn unknown_is_not_found(c: Arc<dyn Catalog>) {
    let id = DatasetId::new();
    assert!(matches!(
        c.get_dataset(id).await,
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        c.list_files(id).await,
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        c.commit(id, &[], DatasetStatus::Ready, None).await,
        Err(CatalogError::NotFound(_))
    ));
    assert!(matches!(
        c.lineage(id, 5, Direction::Both).await,
        Err(CatalogError::NotFound(_))
    ));
}

pub async fn search_filters_and_pages(c: Arc<dyn Catalog>) {
    let mut ids = Vec::new();
    for i in 0..12 {
        let layer = if i % 3 == 0 {
            Layer::Processed
        } else {
            Layer::Raw
        };
        let source = if i % 2 == 0 { "geo" } else { "uniprot" };
        let mut n = new_ds(&format!("dataset {i}"), source, layer);
        n.tags = if i % 4 == 0 {
            vec!["x".into(), "y".into()]
        } else {
            vec!["x".into()]
        };
        if i == 5 {
            n.metadata = json!({"organism": "Mus MUSCULUS", "note": "100% done"});
            n.external_id = Some("P12345".into());
        }
        ids.push(c.insert_dataset(&n, &[], None).await.expect("insert").id);
    }
    let mut pending = new_ds("hidden pending", "geo", Layer::Raw);
    pending.status = DatasetStatus::Pending;
    c.insert_dataset(&pending, &[], None)
        .await
        .expect("insert pending");

    // Every search below fits one page, so its count is what the page holds.
    let all = |q: SearchQuery| {
        let c = c.clone();
        async move {
            let page = c.search(&q).await.expect("search");
            if q.after.is_none() && q.offset == 0 && page.next_cursor.is_none() {
                let n = c.count(&q, 1000).await.expect("count");
                assert_eq!(n.found, page.items.len() as i64, "count of {q:?}");
                assert!(!n.more, "count of {q:?}");
            }
            page.items.into_iter().map(|d| d.id).collect::<Vec<_>>()
        }
    };
    // Newest first, pending hidden.
    let everything = all(SearchQuery {
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(everything, ids.iter().rev().copied().collect::<Vec<_>>());
    assert_eq!(
        all(SearchQuery {
            layer: Some(Layer::Processed),
            limit: 100,
            ..Default::default()
        })
        .await
        .len(),
        4
    );
    assert_eq!(
        all(SearchQuery {
            source: Some("uniprot".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .len(),
        6
    );
    assert_eq!(
        all(SearchQuery {
            tags: vec!["x".into(), "y".into()],
            limit: 100,
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    assert_eq!(
        all(SearchQuery {
            tags: vec!["nope".into()],
            limit: 100,
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    // Free text: case-insensitive, over metadata and external id; LIKE wildcards are literal.
    assert_eq!(
        all(SearchQuery {
            q: Some("mus musculus".into()),
            ..Default::default()
        })
        .await,
        [ids[5]]
    );
    assert_eq!(
        all(SearchQuery {
            q: Some("p12345".into()),
            ..Default::default()
        })
        .await,
        [ids[5]]
    );
    assert_eq!(
        all(SearchQuery {
            q: Some("100%".into()),
            ..Default::default()
        })
        .await,
        [ids[5]]
    );
    assert_eq!(
        all(SearchQuery {
            q: Some("%".into()),
            ..Default::default()
        })
        .await,
        [ids[5]]
    );
    assert_eq!(
        all(SearchQuery {
            q: Some("dataset 1".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    let pend = all(SearchQuery {
        status: DatasetStatus::Pending,
        ..Default::default()
    })
    .await;
    assert_eq!(pend, [pending.id]);

    // Cursor pages cover everything exactly once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = c
            .search(&SearchQuery {
                limit: 5,
                after,
                ..Default::default()
            })
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|d| d.id));
        match page.next_cursor {
            Some(cur) => after = Some(cur.parse().expect("cursor is an id")),
            None => break,
        }
    }
    assert_eq!(seen, everything);
    // The count is the whole result's, whatever page is asked for; pending datasets excluded.
    let count = c
        .count(
            &SearchQuery {
                limit: 5,
                after: Some(everything[3]),
                ..Default::default()
            },
            1000,
        )
        .await
        .expect("count");
    assert_eq!(count.found, everything.len() as i64);
    // A count stops at its bound, and says so; one by layer and source alone is exact anyway.
    let text = SearchQuery {
        q: Some("dataset".into()),
        ..Default::default()
    };
    assert_eq!(
        c.count(&text, 4).await.expect("bounded count"),
        Count {
            found: 4,
            more: true
        }
    );
    assert_eq!(
        c.count(&text, 12).await.expect("count at the bound"),
        Count {
            found: 12,
            more: false
        }
    );
    let by_layer = SearchQuery {
        layer: Some(Layer::Raw),
        source: Some("uniprot".into()),
        ..Default::default()
    };
    assert_eq!(
        c.count(&by_layer, 1).await.expect("count from the totals"),
        Count {
            found: 4,
            more: false
        }
    );
    let hidden = SearchQuery {
        hidden_layers: vec![Layer::Raw],
        ..Default::default()
    };
    assert_eq!(c.count(&hidden, 1).await.expect("count").found, 4);
    // Creation-time bounds: the lower one inclusive, the upper one exclusive.
    let now = chrono::Utc::now();
    let hour = chrono::Duration::hours(1);
    for (after, before, want) in [
        (Some(now - hour), None, everything.len()),
        (Some(now + hour), None, 0),
        (None, Some(now - hour), 0),
        (Some(now - hour), Some(now + hour), everything.len()),
    ] {
        let found = all(SearchQuery {
            created_after: after,
            created_before: before,
            limit: 100,
            ..Default::default()
        })
        .await;
        assert_eq!(found.len(), want, "created in [{after:?}, {before:?})");
    }
    let offset = all(SearchQuery {
        limit: 3,
        offset: 10,
        ..Default::default()
    })
    .await;
    assert_eq!(offset, everything[10..12]);
}

pub async fn stats_per_layer_and_source(c: Arc<dyn Catalog>) {
    c.insert_dataset(&new_ds("a", "geo", Layer::Raw), &[file("x", 100)], None)
        .await
        .expect("insert");
    c.insert_dataset(
        &new_ds("b", "geo", Layer::Processed),
        &[file("x", 50), file("y", 1)],
        None,
    )
    .await
    .expect("insert");
    c.insert_dataset(&new_ds("c", "pubmed", Layer::Raw), &[], None)
        .await
        .expect("insert");
    let mut gone = new_ds("d", "pubmed", Layer::Curated);
    gone.status = DatasetStatus::Deleted;
    c.insert_dataset(&gone, &[file("z", 999)], None)
        .await
        .expect("insert");
    let s = c.stats().await.expect("stats");
    assert_eq!((s.total_datasets, s.total_bytes), (3, 151));
    let layer = |k: &str| {
        s.by_layer
            .iter()
            .find(|g| g.key == k)
            .map(|g| (g.datasets, g.bytes))
    };
    assert_eq!(layer("raw"), Some((2, 100)));
    assert_eq!(layer("processed"), Some((1, 51)));
    assert_eq!(layer("curated"), Some((0, 0)));
    assert_eq!(layer("archive"), Some((0, 0)));
    let src = |k: &str| {
        s.by_source
            .iter()
            .find(|g| g.key == k)
            .map(|g| (g.datasets, g.bytes))
    };
    assert_eq!(src("geo"), Some((2, 151)));
    assert_eq!(src("pubmed"), Some((1, 0)));

    // The totals follow a dataset's life: pending is not counted, its commit is, its files'
    // bytes with it, and a dataset that stops being ready leaves its layer and source.
    let mut pending = new_ds("e", "ncbi", Layer::Curated);
    pending.status = DatasetStatus::Pending;
    let e = c
        .insert_dataset(&pending, &[], None)
        .await
        .expect("insert pending")
        .id;
    let s = c.stats().await.expect("stats");
    assert_eq!((s.total_datasets, s.total_bytes), (3, 151));
    assert!(s.by_source.iter().all(|g| g.key != "ncbi"), "{s:?}");
    c.commit(e, &[file("f", 7)], DatasetStatus::Ready, None)
        .await
        .expect("commit");
    let s = c.stats().await.expect("stats");
    assert_eq!((s.total_datasets, s.total_bytes), (4, 158));
    let curated = s.by_layer.iter().find(|g| g.key == "curated");
    assert_eq!(curated.map(|g| (g.datasets, g.bytes)), Some((1, 7)));
    c.set_status(e, DatasetStatus::Deleted)
        .await
        .expect("delete");
    let s = c.stats().await.expect("stats");
    assert_eq!((s.total_datasets, s.total_bytes), (3, 151));
    assert!(s.by_source.iter().all(|g| g.key != "ncbi"), "{s:?}");
}

pub async fn commit_is_atomic(c: Arc<dyn Catalog>) {
    let n = new_ds("d", "geo", Layer::Raw);
    c.insert_dataset(&n, &[file("a.csv", 5)], None)
        .await
        .expect("insert");
    // A clash with an existing name writes nothing: no new file, no provenance, no status change.
    let r = c
        .commit(
            n.id,
            &[file("b.csv", 7), file("a.csv", 9)],
            DatasetStatus::Failed,
            Some(&prov(Action::Manual, vec![], vec![n.id])),
        )
        .await;
    assert!(matches!(r, Err(CatalogError::Conflict(_))), "{r:?}");
    let d = c.get_dataset(n.id).await.expect("get");
    assert_eq!(
        (d.file_count, d.total_size, d.status),
        (1, 5, DatasetStatus::Ready)
    );
    assert!(
        c.provenance_of(&[n.id])
            .await
            .expect("provenance")
            .is_empty()
    );
    // A good commit lands whole.
    let d = c
        .commit(
            n.id,
            &[file("b.csv", 7)],
            DatasetStatus::Ready,
            Some(&prov(Action::Manual, vec![], vec![n.id])),
        )
        .await
        .expect("commit");
    assert_eq!((d.file_count, d.total_size), (2, 12));
    assert_eq!(c.provenance_of(&[n.id]).await.expect("provenance").len(), 1);
}

pub async fn upload_claims_are_exclusive(c: Arc<dyn Catalog>) {
    use std::time::Duration;
    let hour = Duration::from_secs(3600);
    let n = new_ds("d", "geo", Layer::Raw);
    c.insert_dataset(&n, &[file("done.csv", 1)], None)
        .await
        .expect("insert");
    c.claim_file(n.id, "new.csv", hour)
        .await
        .expect("first claim");
    assert!(
        matches!(
            c.claim_file(n.id, "new.csv", hour).await,
            Err(CatalogError::Conflict(_))
        ),
        "a live claim is exclusive"
    );
    assert!(
        matches!(
            c.claim_file(n.id, "done.csv", hour).await,
            Err(CatalogError::Conflict(_))
        ),
        "a committed name cannot be claimed"
    );
    // Committing the file releases the claim; the name is then taken for good.
    c.commit(n.id, &[file("new.csv", 2)], DatasetStatus::Ready, None)
        .await
        .expect("commit");
    assert!(matches!(
        c.claim_file(n.id, "new.csv", hour).await,
        Err(CatalogError::Conflict(_))
    ));
    // A released claim can be taken again; a stale one is taken over.
    c.claim_file(n.id, "other.csv", hour).await.expect("claim");
    c.release_claim(n.id, "other.csv").await.expect("release");
    c.claim_file(n.id, "other.csv", hour)
        .await
        .expect("claim after release");
    c.claim_file(n.id, "other.csv", Duration::ZERO)
        .await
        .expect("a stale claim is taken over");
    assert!(matches!(
        c.claim_file(DatasetId::new(), "x", hour).await,
        Err(CatalogError::NotFound(_) | CatalogError::Invalid(_))
    ));
}

pub async fn insert_is_atomic(c: Arc<dyn Catalog>) {
    let n = new_ds("dup files", "geo", Layer::Raw);
    let r = c
        .insert_dataset(
            &n,
            &[file("same", 1), file("same", 2)],
            Some(&prov(Action::Registration, vec![], vec![n.id])),
        )
        .await;
    assert!(matches!(r, Err(CatalogError::Conflict(_))), "{r:?}");
    assert!(matches!(
        c.get_dataset(n.id).await,
        Err(CatalogError::NotFound(_))
    ));
    assert!(
        c.provenance_of(&[n.id])
            .await
            .expect("provenance")
            .is_empty()
    );
}

pub async fn one_promotion_target_per_layer(c: Arc<dyn Catalog>) {
    let src = c
        .insert_dataset(&new_ds("src", "geo", Layer::Raw), &[], None)
        .await
        .expect("insert");
    let mut t1 = new_ds("src", "geo", Layer::Processed);
    t1.promoted_from = Some(src.id);
    t1.status = DatasetStatus::Pending;
    c.insert_dataset(&t1, &[], None)
        .await
        .expect("first target");
    let mut t2 = new_ds("src", "geo", Layer::Processed);
    t2.promoted_from = Some(src.id);
    assert!(matches!(
        c.insert_dataset(&t2, &[], None).await,
        Err(CatalogError::Conflict(_))
    ));
    let found = c
        .find_promotion(src.id, Layer::Processed)
        .await
        .expect("find")
        .expect("a target");
    assert_eq!((found.id, found.status), (t1.id, DatasetStatus::Pending));
    assert!(
        c.find_promotion(src.id, Layer::Curated)
            .await
            .expect("find")
            .is_none()
    );
}

pub async fn lineage_walks_both_ways(c: Arc<dyn Catalog>) {
    // a -> b -> c -> d, and b -> e (a branch), f merges c and e.
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d", "e", "f"] {
        ids.push(
            c.insert_dataset(&new_ds(name, "geo", Layer::Raw), &[], None)
                .await
                .expect("insert")
                .id,
        );
    }
    let [a, b, cc, d, e, f] = ids[..] else {
        unreachable!()
    };
    for (i, o) in [(a, b), (b, cc), (cc, d), (b, e)] {
        c.append_provenance(&prov(Action::Pipeline, vec![i], vec![o]))
            .await
            .expect("append");
    }
    let merge = c
        .append_provenance(&prov(Action::Pipeline, vec![cc, e], vec![f]))
        .await
        .expect("append");
    assert_eq!(merge.inputs, [cc, e]);

    let g = c.lineage(cc, 10, Direction::Both).await.expect("graph");
    let dist = |id| g.nodes.iter().find(|n| n.id == id).map(|n| n.distance);
    assert_eq!(
        (dist(a), dist(b), dist(cc), dist(d), dist(f)),
        (Some(-2), Some(-1), Some(0), Some(1), Some(1))
    );
    assert_eq!(
        dist(e),
        None,
        "a sibling branch is neither ancestor nor descendant"
    );
    assert!(
        g.edges
            .iter()
            .any(|x| x.from == a && x.to == b && x.action == "pipeline")
    );
    assert!(g.edges.iter().any(|x| x.from == cc && x.to == f));

    let up1 = c.lineage(cc, 1, Direction::Ancestors).await.expect("graph");
    assert_eq!(up1.nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [b, cc]);
    let down = c
        .lineage(a, 10, Direction::Descendants)
        .await
        .expect("graph");
    assert_eq!(down.nodes.len(), 6);
    let fx = c.lineage(f, 10, Direction::Ancestors).await.expect("graph");
    assert_eq!(fx.nodes.len(), 5, "f descends from a, b, c and e");
    let entries = c.provenance_of(&[f]).await.expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].inputs.clone(), entries[0].outputs.clone()),
        (vec![cc, e], vec![f])
    );
}

pub async fn several_inserts_are_one_transaction(c: Arc<dyn Catalog>) {
    let raw = new_ds("upload.csv", "files", Layer::Raw);
    let table = new_ds("upload.csv table", "files", Layer::Processed);
    let entries = [
        prov(Action::Registration, vec![], vec![raw.id]),
        prov(Action::Pipeline, vec![raw.id], vec![table.id]),
    ];
    // A clash in the second dataset's files undoes the first dataset and both entries.
    let r = c
        .insert_datasets(
            &[
                (raw.clone(), vec![file("upload.csv", 10)]),
                (table.clone(), vec![file("t", 1), file("t", 2)]),
            ],
            &entries,
        )
        .await;
    assert!(matches!(r, Err(CatalogError::Conflict(_))), "{r:?}");
    assert!(matches!(
        c.get_dataset(raw.id).await,
        Err(CatalogError::NotFound(_))
    ));
    assert!(
        c.provenance_of(&[raw.id])
            .await
            .expect("provenance")
            .is_empty()
    );

    let done = c
        .insert_datasets(
            &[
                (raw.clone(), vec![file("upload.csv", 10)]),
                (table.clone(), vec![file("upload.parquet", 4)]),
            ],
            &entries,
        )
        .await
        .expect("insert both");
    assert_eq!(
        done.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![raw.id, table.id]
    );
    let edges = c
        .lineage(table.id, 5, Direction::Ancestors)
        .await
        .expect("lineage");
    assert!(edges.nodes.iter().any(|n| n.id == raw.id), "{edges:?}");
}

pub async fn search_by_content_and_external_id(c: Arc<dyn Catalog>) {
    let mut a = new_ds("a", "files", Layer::Raw);
    a.external_id = Some("plate.csv".into());
    let mut b = new_ds("b", "files", Layer::Raw);
    b.external_id = Some("plate.csv".into());
    let other = new_ds("c", "files", Layer::Raw);
    c.insert_dataset(&a, &[file("one", 1)], None)
        .await
        .expect("a");
    c.insert_dataset(&b, &[file("two", 2)], None)
        .await
        .expect("b");
    c.insert_dataset(&other, &[file("one", 1)], None)
        .await
        .expect("c");
    let ids = |p: lake_host::catalog::Page<lake_host::catalog::Dataset>| {
        let mut v: Vec<DatasetId> = p.items.iter().map(|d| d.id).collect();
        v.sort();
        v
    };
    let by_name = c
        .search(&SearchQuery {
            external_id: Some("plate.csv".into()),
            ..SearchQuery::default()
        })
        .await
        .expect("by name");
    let mut want = vec![a.id, b.id];
    want.sort();
    assert_eq!(ids(by_name), want);
    let sha = file("one", 1).sha256;
    let by_sha = c
        .search(&SearchQuery {
            sha256: Some(sha.to_uppercase()),
            source: Some("files".into()),
            ..SearchQuery::default()
        })
        .await
        .expect("by sha");
    let mut want = vec![a.id, other.id];
    want.sort();
    assert_eq!(ids(by_sha), want);
    let none = c
        .search(&SearchQuery {
            sha256: Some(sha),
            external_id: Some("plate.csv".into()),
            layer: Some(Layer::Processed),
            ..SearchQuery::default()
        })
        .await
        .expect("none");
    assert!(none.items.is_empty());
}

pub async fn jobs_are_claimed_and_scheduled_once(c: Arc<dyn Catalog>) {
    let job = |key: Option<&str>| NewJob {
        id: uuid::Uuid::now_v7(),
        kind: "collection".into(),
        request: json!({"source": "pubmed"}),
        schedule_key: key.map(str::to_owned),
    };
    let first = c.insert_job(&job(None)).await.expect("insert");
    assert_eq!(first.status, JobStatus::Queued);
    assert_eq!(first.request, json!({"source": "pubmed"}));
    assert!(first.started_at.is_none() && first.result.is_none());

    // Ten concurrent claims of one job: exactly one wins.
    let claims = futures::future::join_all((0..10).map(|_| c.start_job(first.id))).await;
    let won = claims.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "one claim wins: {claims:?}");
    assert!(
        claims
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(CatalogError::Conflict(_))))
    );
    let running = c.get_job(first.id).await.expect("get");
    assert_eq!(running.status, JobStatus::Running);
    assert!(running.started_at.is_some());

    let done = c
        .finish_job(
            first.id,
            JobStatus::Succeeded,
            Some(&json!({"outcome": "new"})),
            None,
        )
        .await
        .expect("finish");
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(json!({"outcome": "new"})));
    assert!(done.finished_at.is_some());
    assert!(
        matches!(
            c.finish_job(first.id, JobStatus::Failed, None, Some("late"))
                .await,
            Err(CatalogError::Conflict(_))
        ),
        "a finished job stays finished"
    );
    assert!(matches!(
        c.start_job(first.id).await,
        Err(CatalogError::Conflict(_))
    ));

    // Ten replicas schedule the same slot at once: one job exists.
    let key = "source:pubmed@2026-12-01T00:00:00Z";
    let inserts = futures::future::join_all((0..10).map(|_| {
        let c = c.clone();
        async move { c.insert_job(&job(Some(key))).await }
    }))
    .await;
    assert_eq!(
        inserts.iter().filter(|r| r.is_ok()).count(),
        1,
        "{inserts:?}"
    );
    assert!(
        inserts
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(CatalogError::Conflict(_))))
    );
    c.insert_job(&job(Some("source:pubmed@2026-12-02T00:00:00Z")))
        .await
        .expect("the next slot is free");

    let failed = c.insert_job(&job(None)).await.expect("insert");
    let failed = c
        .finish_job(
            failed.id,
            JobStatus::Failed,
            None,
            Some("upstream said 500"),
        )
        .await
        .expect("a queued job can fail");
    assert_eq!(failed.error.as_deref(), Some("upstream said 500"));

    let listed = c.list_jobs("collection", 10).await.expect("list");
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0].id, failed.id, "newest first");
    assert_eq!(listed[3].id, first.id);
    assert_eq!(c.list_jobs("collection", 2).await.expect("list").len(), 2);
    assert!(c.list_jobs("backup", 10).await.expect("list").is_empty());
    assert!(matches!(
        c.get_job(uuid::Uuid::now_v7()).await,
        Err(CatalogError::NotFound(_))
    ));
}

pub async fn one_raw_dataset_per_collected_version(c: Arc<dyn Catalog>) {
    let collected = |version: &str| {
        let mut d = new_ds("uniprot P1", "uniprot", Layer::Raw);
        d.external_id = Some("P1".into());
        d.metadata = json!({"source": "uniprot", "date": "2026-12-01", "version": version, "content_sha256": "ab"});
        d
    };
    c.insert_dataset(&collected("1"), &[], None)
        .await
        .expect("v1");
    assert!(
        matches!(c.insert_dataset(&collected("1"), &[], None).await, Err(CatalogError::Conflict(m)) if m.contains("datasets_collection_version")),
        "a second version 1 is refused"
    );
    c.insert_dataset(&collected("2"), &[], None)
        .await
        .expect("v2");
    // Other raw datasets (uploads, registrations) are not collections: no such rule.
    let mut upload = collected("1");
    upload.metadata = json!({"source": "uniprot", "date": "2026-12-01", "version": "1"});
    c.insert_dataset(&upload, &[], None)
        .await
        .expect("not a collection");
    let mut again = upload.clone();
    again.id = DatasetId::new();
    again.prefix = format!("uniprot/{}/", again.id);
    c.insert_dataset(&again, &[], None)
        .await
        .expect("not a collection");
}

fn audit_entry(principal: Option<&str>, decision: Decision, status: u16) -> NewAuditEntry {
    NewAuditEntry {
        request_id: uuid::Uuid::now_v7().simple().to_string(),
        principal: principal.map(str::to_owned),
        token_id: principal.map(|p| format!("token-of-{p}")),
        client: Some("127.0.0.1".into()),
        method: "POST".into(),
        route: "/layers/promote".into(),
        resource: "/layers/promote".into(),
        action: "promote-further".into(),
        decision,
        reason: (decision == Decision::Refused).then(|| "needs the curator role".to_owned()),
        status,
    }
}

pub async fn audit_entries_filter_and_page_newest_first(c: Arc<dyn Catalog>) {
    let start = chrono::Utc::now() - chrono::Duration::seconds(1);
    let written = [
        audit_entry(None, Decision::Refused, 401),
        audit_entry(Some("ana"), Decision::Allowed, 201),
        audit_entry(Some("ben"), Decision::Refused, 403),
        audit_entry(Some("ana"), Decision::Refused, 429),
    ];
    for e in &written {
        c.append_audit(e).await.expect("append");
    }
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let all = c.audit_entries(&q(|_| {})).await.expect("read");
    let ids: Vec<&str> = all.iter().map(|e| e.request.request_id.as_str()).collect();
    let want: Vec<&str> = written
        .iter()
        .rev()
        .map(|e| e.request_id.as_str())
        .collect();
    assert_eq!(ids, want, "newest first");
    let back = &all[1].request;
    assert_eq!(
        (
            back.principal.as_deref(),
            back.token_id.as_deref(),
            back.status,
            back.decision
        ),
        (Some("ben"), Some("token-of-ben"), 403, Decision::Refused)
    );
    assert_eq!(back.reason.as_deref(), Some("needs the curator role"));
    assert!(all[1].at >= start && all[1].at <= chrono::Utc::now());
    let refused = c
        .audit_entries(&q(|q| q.decision = Some(Decision::Refused)))
        .await
        .expect("read");
    assert_eq!(refused.len(), 3);
    assert!(
        refused
            .iter()
            .all(|e| e.request.decision == Decision::Refused)
    );
    let ana = c
        .audit_entries(&q(|q| q.principal = Some("ana".into())))
        .await
        .expect("read");
    assert_eq!(
        ana.iter().map(|e| e.request.status).collect::<Vec<_>>(),
        vec![429, 201]
    );
    // Pages continue before the last seq seen; time bounds cut both ways.
    let page = c.audit_entries(&q(|q| q.limit = 2)).await.expect("read");
    let rest = c
        .audit_entries(&AuditQuery {
            before: Some(page[1].seq),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(page.len() + rest.len(), 4);
    assert!(rest.iter().all(|e| e.seq < page[1].seq));
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let none = c
        .audit_entries(&AuditQuery {
            since: Some(future),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("read");
    assert!(none.is_empty());
    let before_start = c
        .audit_entries(&AuditQuery {
            until: Some(start),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("read");
    assert!(before_start.is_empty());
}

pub async fn users_are_named_once_and_disabled_once(c: Arc<dyn Catalog>) {
    use lake_host::catalog::{NewToken, UserRecord};
    use lake_host::identity::{Bearer, Role, UserKind};
    let ana = UserRecord {
        name: "ana".into(),
        kind: UserKind::Person,
        role: Role::Curator,
        created_at: chrono::Utc::now(),
        disabled_at: None,
    };
    let got = c.insert_user(&ana).await.expect("insert");
    assert_eq!(
        (got.name.as_str(), got.kind, got.role),
        ("ana", UserKind::Person, Role::Curator)
    );
    let taken = c.insert_user(&ana).await;
    assert!(
        matches!(&taken, Err(CatalogError::Conflict(k)) if k.constraint == lake_host::catalog::Constraint::UserName),
        "{taken:?}"
    );
    c.insert_user(&UserRecord {
        name: "seq-3".into(),
        kind: UserKind::Service,
        ..ana.clone()
    })
    .await
    .expect("insert");
    let names: Vec<String> = c
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["ana", "seq-3"]);
    assert!(matches!(
        c.user("nobody").await,
        Err(CatalogError::NotFound(_))
    ));
    // A token read back says whether its user is disabled; disabling keeps the first time.
    let b = Bearer::generate();
    c.insert_token(&NewToken {
        id: b.id,
        name: "laptop".into(),
        owner: "ana".into(),
        role: Role::Reader,
        digest: b.secret.digest(),
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    })
    .await
    .expect("token");
    assert!(
        c.token(b.id)
            .await
            .expect("token")
            .owner_disabled_at
            .is_none()
    );
    let first = c.disable_user("ana").await.expect("disable").disabled_at;
    assert!(first.is_some());
    assert_eq!(
        c.disable_user("ana").await.expect("again").disabled_at,
        first
    );
    assert_eq!(c.token(b.id).await.expect("token").owner_disabled_at, first);
    assert!(matches!(
        c.disable_user("nobody").await,
        Err(CatalogError::NotFound(_))
    ));
}

pub async fn tokens_keep_only_a_digest_and_revoke_once(c: Arc<dyn Catalog>) {
    use lake_host::catalog::NewToken;
    use lake_host::identity::{Bearer, Role};
    let issue = |owner: &str, role: Role| {
        let b = Bearer::generate();
        (
            NewToken {
                id: b.id,
                name: "laptop".into(),
                owner: owner.into(),
                role,
                digest: b.secret.digest(),
                expires_at: chrono::Utc::now() + chrono::Duration::days(90),
            },
            b,
        )
    };
    let (a, a_bearer) = issue("ana", Role::Curator);
    let (b, _) = issue("ben", Role::Reader);
    let rec = c.insert_token(&a).await.expect("insert");
    c.insert_token(&b).await.expect("insert");
    assert_eq!(
        (rec.role, rec.owner.as_str(), rec.name.as_str()),
        (Role::Curator, "ana", "laptop")
    );
    assert!(rec.revoked_at.is_none() && rec.last_used_at.is_none());
    // The digest is what was given, and only the right secret matches it.
    assert!(
        a_bearer
            .secret
            .matches(&c.token(a.id).await.expect("get").digest)
    );
    assert!(
        matches!(c.insert_token(&a).await, Err(CatalogError::Conflict(_))),
        "an id is recorded once"
    );
    assert!(matches!(
        c.token(uuid::Uuid::now_v7()).await,
        Err(CatalogError::NotFound(_))
    ));
    let all = c.list_tokens(None).await.expect("list");
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![b.id, a.id]
    );
    let anas = c.list_tokens(Some("ana")).await.expect("list");
    assert_eq!(anas.len(), 1);
    c.touch_token(a.id).await.expect("touch");
    assert!(c.token(a.id).await.expect("get").last_used_at.is_some());
    let first = c.revoke_token(a.id).await.expect("revoke").revoked_at;
    assert!(first.is_some());
    let again = c.revoke_token(a.id).await.expect("revoke again").revoked_at;
    assert_eq!(first, again, "a revocation keeps its first time");
    assert!(c.token(b.id).await.expect("get").revoked_at.is_none());
}

pub async fn conflicts_name_their_constraint(c: Arc<dyn Catalog>) {
    use lake_host::catalog::Constraint;
    use std::time::Duration;
    let constraint = |r: Result<(), CatalogError>| match r {
        Err(CatalogError::Conflict(k)) => Some(k.constraint),
        _ => None,
    };
    let hour = Duration::from_secs(3600);
    // A file name taken, by a commit and by an insert of two files of one name.
    let n = new_ds("d", "geo", Layer::Raw);
    c.insert_dataset(&n, &[file("a.csv", 1)], None)
        .await
        .expect("insert");
    let dup = c
        .commit(n.id, &[file("a.csv", 2)], DatasetStatus::Ready, None)
        .await;
    assert_eq!(constraint(dup.map(drop)), Some(Constraint::FileName));
    let twice = new_ds("twice", "geo", Layer::Raw);
    let r = c
        .insert_dataset(&twice, &[file("s", 1), file("s", 2)], None)
        .await;
    assert_eq!(constraint(r.map(drop)), Some(Constraint::FileName));
    // A claim held, and a claim on a committed name.
    c.claim_file(n.id, "b.csv", hour).await.expect("claim");
    let held = c.claim_file(n.id, "b.csv", hour).await;
    assert_eq!(constraint(held), Some(Constraint::FileClaim));
    let done = c.claim_file(n.id, "a.csv", hour).await;
    assert!(
        matches!(
            constraint(done),
            Some(Constraint::FileName | Constraint::FileClaim)
        ),
        "a committed name is refused as taken"
    );
    // A second promotion target.
    let mut t1 = new_ds("d", "geo", Layer::Processed);
    t1.promoted_from = Some(n.id);
    c.insert_dataset(&t1, &[], None).await.expect("target");
    let mut t2 = new_ds("d", "geo", Layer::Processed);
    t2.promoted_from = Some(n.id);
    let r = c.insert_dataset(&t2, &[], None).await;
    assert_eq!(constraint(r.map(drop)), Some(Constraint::PromotionTarget));
    // A collected version recorded twice.
    let collected = || {
        let mut d = new_ds("ncbi X", "ncbi", Layer::Raw);
        d.external_id = Some("X".into());
        d.metadata =
            json!({"source": "ncbi", "date": "2026-12-02", "version": "1", "content_sha256": "cd"});
        d
    };
    c.insert_dataset(&collected(), &[], None).await.expect("v1");
    let r = c.insert_dataset(&collected(), &[], None).await;
    assert_eq!(constraint(r.map(drop)), Some(Constraint::CollectionVersion));
    // A schedule slot taken, a job claimed twice, a job ended twice.
    let job = |key: Option<&str>| NewJob {
        id: uuid::Uuid::now_v7(),
        kind: "backup".into(),
        request: json!({}),
        schedule_key: key.map(str::to_owned),
    };
    c.insert_job(&job(Some("backup:daily@x")))
        .await
        .expect("job");
    let r = c.insert_job(&job(Some("backup:daily@x"))).await;
    assert_eq!(constraint(r.map(drop)), Some(Constraint::ScheduleKey));
    let j = c.insert_job(&job(None)).await.expect("job");
    c.start_job(j.id).await.expect("start");
    let r = c.start_job(j.id).await;
    assert_eq!(constraint(r.map(drop)), Some(Constraint::JobNotQueued));
    c.finish_job(j.id, JobStatus::Succeeded, None, None)
        .await
        .expect("finish");
    let r = c
        .finish_job(j.id, JobStatus::Failed, None, Some("late"))
        .await;
    assert_eq!(constraint(r.map(drop)), Some(Constraint::JobEnded));
    // A dump into a catalog that holds data.
    let dump = c.export().await.expect("export");
    let r = c.import(&dump).await;
    assert_eq!(constraint(r), Some(Constraint::NotEmpty));
}

pub async fn a_prefix_names_its_dataset(c: Arc<dyn Catalog>) {
    let n = new_ds("plates", "reader", Layer::Processed);
    c.insert_dataset(&n, &[file("a.csv", 1)], None)
        .await
        .expect("insert");
    let found = c.dataset_at(&n.bucket, &n.prefix).await.expect("at");
    assert_eq!(found.map(|d| d.id), Some(n.id));
    assert_eq!(c.dataset_at(&n.bucket, "reader/").await.expect("at"), None);
    assert_eq!(
        c.dataset_at("elsewhere", &n.prefix).await.expect("at"),
        None
    );
    c.set_status(n.id, DatasetStatus::Deleted)
        .await
        .expect("delete");
    assert_eq!(c.dataset_at(&n.bucket, &n.prefix).await.expect("at"), None);
}

pub async fn table_chains_are_named_once(c: Arc<dyn Catalog>) {
    use lake_host::catalog::{Constraint, TableName};
    // A source of its own: other tests' datasets share the database.
    let source = format!("tn{}", uuid::Uuid::now_v7().simple());
    let layer = Layer::Processed;
    let table = "samples.csv (table)";
    let v1 = c
        .insert_dataset(
            &new_ds(table, &source, layer),
            &[file("samples.parquet", 10)],
            None,
        )
        .await
        .expect("v1");
    let v2 = c
        .insert_dataset(
            &new_ds(table, &source, layer),
            &[file("samples.parquet", 12)],
            None,
        )
        .await
        .expect("v2");
    // Not tables: a CSV, two files, one still being written, one in another layer.
    for (name, files, status, l) in [
        (
            "notes",
            vec![file("notes.csv", 3)],
            DatasetStatus::Ready,
            layer,
        ),
        (
            "pair",
            vec![file("a.parquet", 1), file("b.parquet", 1)],
            DatasetStatus::Ready,
            layer,
        ),
        (
            "later",
            vec![file("later.parquet", 1)],
            DatasetStatus::Pending,
            layer,
        ),
        (
            "up",
            vec![file("up.parquet", 1)],
            DatasetStatus::Ready,
            Layer::Curated,
        ),
    ] {
        let mut n = new_ds(name, &source, l);
        n.status = status;
        c.insert_dataset(&n, &files, None).await.expect("insert");
    }
    let unnamed = |c: Arc<dyn Catalog>, layer: Layer| {
        let source = source.clone();
        async move {
            c.unnamed_tables(layer, 100_000)
                .await
                .expect("unnamed")
                .into_iter()
                .filter(|(s, _)| *s == source)
                .map(|(_, n)| n)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(unnamed(c.clone(), layer).await, [table]);
    assert_eq!(unnamed(c.clone(), Layer::Curated).await, ["up"]);
    let named = TableName {
        layer,
        name: format!("{source}_samples"),
        source: source.clone(),
        dataset_name: table.into(),
    };
    c.name_table(&named).await.expect("name");
    assert!(unnamed(c.clone(), layer).await.is_empty());
    let constraint = |r: Result<(), CatalogError>| match r {
        Err(CatalogError::Conflict(k)) => Some(k.constraint),
        _ => None,
    };
    let taken = TableName {
        dataset_name: "notes".into(),
        ..named.clone()
    };
    assert_eq!(
        constraint(c.name_table(&taken).await),
        Some(Constraint::TableName)
    );
    let again = TableName {
        name: format!("{source}_other"),
        ..named.clone()
    };
    assert_eq!(
        constraint(c.name_table(&again).await),
        Some(Constraint::TableChain)
    );
    // The same name in another layer is another table.
    let up = TableName {
        layer: Layer::Curated,
        dataset_name: "up".into(),
        ..named.clone()
    };
    c.name_table(&up).await.expect("name in curated");
    assert_eq!(
        c.table_name(layer, &named.name).await.expect("get"),
        Some(named.clone())
    );
    assert_eq!(
        c.table_name(Layer::Curated, &named.name)
            .await
            .expect("get"),
        Some(up)
    );
    assert_eq!(
        c.table_name(layer, "no such table").await.expect("get"),
        None
    );
    assert_eq!(
        c.table_name_of(layer, &source, table).await.expect("of"),
        Some(named.clone())
    );
    assert_eq!(
        c.table_name_of(layer, &source, "notes").await.expect("of"),
        None
    );
    let versions: Vec<DatasetId> = c
        .table_versions(&named)
        .await
        .expect("versions")
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(versions, [v1.id, v2.id]);
    // Pages by name, after a name.
    for n in ["b", "a"] {
        let t = TableName {
            name: format!("{source}_{n}"),
            dataset_name: n.into(),
            ..named.clone()
        };
        c.name_table(&t).await.expect("name");
    }
    let page: Vec<String> = c
        .table_names(layer, &format!("{source}_a"), 2)
        .await
        .expect("page")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(page, [format!("{source}_b"), format!("{source}_samples")]);
}

macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@one $make, insert_and_get);
            conformance!(@one $make, unknown_is_not_found);
            conformance!(@one $make, search_filters_and_pages);
            conformance!(@one $make, stats_per_layer_and_source);
            conformance!(@one $make, commit_is_atomic);
            conformance!(@one $make, insert_is_atomic);
            conformance!(@one $make, several_inserts_are_one_transaction);
            conformance!(@one $make, search_by_content_and_external_id);
            conformance!(@one $make, upload_claims_are_exclusive);
            conformance!(@one $make, one_promotion_target_per_layer);
            conformance!(@one $make, lineage_walks_both_ways);
            conformance!(@one $make, jobs_are_claimed_and_scheduled_once);
            conformance!(@one $make, one_raw_dataset_per_collected_version);
            conformance!(@one $make, tokens_keep_only_a_digest_and_revoke_once);
            conformance!(@one $make, users_are_named_once_and_disabled_once);
            conformance!(@one $make, conflicts_name_their_constraint);
            conformance!(@one $make, audit_entries_filter_and_page_newest_first);
            conformance!(@one $make, table_chains_are_named_once);
            conformance!(@one $make, a_prefix_names_its_dataset);
        }
    };
    (@one $make:expr, $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let Some((catalog, _guard)) = $make.await else { return };
            super::$name(catalog).await;
        }
    };
}

async fn make_sqlite() -> Option<(Arc<dyn Catalog>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("catalog.db").display());
    let c = lake_host::catalog::sqlite::SqliteCatalog::connect(&url, 4)
        .await
        .expect("open");
    c.migrate().await.expect("migrate");
    Some((Arc::new(c), dir))
}

async fn make_postgres() -> Option<(Arc<dyn Catalog>, ())> {
    let c = crate::pg_catalog().await?;
    Some((c, ()))
}

conformance!(sqlite, make_sqlite());
conformance!(postgres, make_postgres());

/// The append-only rule is enforced by the database itself, not only by the code that writes it.
#[tokio::test]
async fn postgres_refuses_provenance_rewrites_and_raw_deletes() {
    let Some(c) = crate::pg_catalog().await else {
        return;
    };
    let raw = c
        .insert_dataset(&new_ds("r", "geo", Layer::Raw), &[], None)
        .await
        .expect("insert");
    let out = c
        .insert_dataset(&new_ds("o", "geo", Layer::Processed), &[], None)
        .await
        .expect("insert");
    c.append_provenance(&prov(Action::Manual, vec![raw.id], vec![out.id]))
        .await
        .expect("append");
    c.append_audit(&audit_entry(Some("ana"), Decision::Refused, 403))
        .await
        .expect("audit");
    for sql in [
        "UPDATE provenance SET notes = 'rewritten'",
        "DELETE FROM provenance",
        "DELETE FROM lineage_edges",
        "DELETE FROM datasets",
        "UPDATE audit SET reason = 'nothing happened'",
        "DELETE FROM audit",
    ] {
        let r = sqlx::query(sql).execute(c.pool()).await;
        assert!(r.is_err(), "{sql} was allowed");
    }
    assert_eq!(c.provenance_of(&[raw.id]).await.expect("entries").len(), 1);
}

#[tokio::test]
async fn sqlite_refuses_provenance_rewrites_and_raw_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.db");
    let c = lake_host::catalog::sqlite::SqliteCatalog::connect(
        &format!("sqlite:{}", path.display()),
        2,
    )
    .await
    .expect("open");
    c.migrate().await.expect("migrate");
    let raw = c
        .insert_dataset(&new_ds("r", "geo", Layer::Raw), &[], None)
        .await
        .expect("insert");
    let out = c
        .insert_dataset(&new_ds("o", "geo", Layer::Processed), &[], None)
        .await
        .expect("insert");
    c.append_provenance(&prov(Action::Manual, vec![raw.id], vec![out.id]))
        .await
        .expect("append");
    c.append_audit(&audit_entry(Some("ana"), Decision::Refused, 403))
        .await
        .expect("audit");
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("raw connection");
    for sql in [
        "UPDATE provenance SET notes = 'rewritten'",
        "DELETE FROM provenance",
        "DELETE FROM lineage_edges",
        "DELETE FROM datasets",
        "UPDATE audit SET reason = 'nothing happened'",
        "DELETE FROM audit",
    ] {
        assert!(
            sqlx::query(sql).execute(&mut conn).await.is_err(),
            "{sql} was allowed"
        );
    }
}

/// A catalog with something of everything: layers, statuses, a promotion, tags, files, provenance
/// with several inputs and none.
async fn populate(c: &dyn Catalog) {
    let mut raw = new_ds("raw", "geo", Layer::Raw);
    raw.tags = vec!["a".into(), "b".into()];
    raw.external_id = Some("GSE1".into());
    let raw = c
        .insert_dataset(
            &raw,
            &[file("x.soft", 10), file("y.soft", 20)],
            Some(&prov(Action::Collection, vec![], vec![raw.id])),
        )
        .await
        .expect("raw");
    let mut promoted = new_ds("raw", "geo", Layer::Processed);
    promoted.promoted_from = Some(raw.id);
    let promoted = c
        .insert_dataset(
            &promoted,
            &[file("x.soft", 10)],
            Some(&prov(Action::Promotion, vec![raw.id], vec![promoted.id])),
        )
        .await
        .expect("promoted");
    let other = c
        .insert_dataset(
            &new_ds("t", "files", Layer::Curated),
            &[file("t.parquet", 5)],
            None,
        )
        .await
        .expect("other");
    let mut gone = new_ds("gone", "files", Layer::Processed);
    gone.status = DatasetStatus::Deleted;
    c.insert_dataset(&gone, &[], None).await.expect("deleted");
    c.append_provenance(&prov(
        Action::Pipeline,
        vec![promoted.id, other.id],
        vec![gone.id],
    ))
    .await
    .expect("pipeline");
    c.append_provenance(&prov(Action::Collection, vec![], vec![]))
        .await
        .expect("a failed collection");
}

/// Timestamps as both backends keep them (PostgreSQL: microseconds).
fn normalised(mut d: CatalogDump) -> CatalogDump {
    use chrono::SubsecRound;
    for x in &mut d.datasets {
        x.created_at = x.created_at.trunc_subsecs(6);
        x.updated_at = x.updated_at.trunc_subsecs(6);
    }
    for f in &mut d.files {
        f.file.created_at = f.file.created_at.trunc_subsecs(6);
    }
    for e in &mut d.provenance {
        e.created_at = e.created_at.trunc_subsecs(6);
    }
    d
}

async fn dump_survives(from: Arc<dyn Catalog>, into: Arc<dyn Catalog>) {
    populate(from.as_ref()).await;
    let dump = from.export().await.expect("export");
    assert_eq!(dump.datasets.len(), 4);
    assert_eq!(dump.files.len(), 4);
    assert_eq!(dump.provenance.len(), 4);
    // Through JSON, as a backup stores it.
    let text = serde_json::to_string(&dump).expect("json");
    let read: CatalogDump = serde_json::from_str(&text).expect("read back");
    into.import(&read).await.expect("import");
    let again = into.export().await.expect("export again");
    assert_eq!(normalised(again), normalised(dump.clone()));
    // The imported datasets are in the totals.
    let stats = into.stats().await.expect("stats");
    assert_eq!(stats, from.stats().await.expect("stats"));
    assert!(stats.total_datasets > 0, "{stats:?}");
    // Lineage is rebuilt from the entries: the promoted dataset's graph is the same.
    let promoted = dump
        .datasets
        .iter()
        .find(|d| d.promoted_from.is_some())
        .expect("promoted");
    let g1 = from
        .lineage(promoted.id, 10, Direction::Both)
        .await
        .expect("lineage");
    let g2 = into
        .lineage(promoted.id, 10, Direction::Both)
        .await
        .expect("lineage");
    let edges = |g: &lake_host::provenance::LineageGraph| {
        let mut e: Vec<String> = g
            .edges
            .iter()
            .map(|e| format!("{:?}", (e.from, e.to, &e.action)))
            .collect();
        e.sort();
        e
    };
    assert_eq!(edges(&g1), edges(&g2));
    assert!(edges(&g1).len() >= 2, "{:?}", edges(&g1));
    // Only into an empty catalog.
    assert!(matches!(
        into.import(&read).await,
        Err(CatalogError::Conflict(_))
    ));
}

#[tokio::test]
async fn a_sqlite_dump_loads_into_sqlite() {
    let (a, _da) = make_sqlite().await.expect("sqlite");
    let (b, _db) = make_sqlite().await.expect("sqlite");
    dump_survives(a, b).await;
}

#[tokio::test]
async fn a_sqlite_dump_loads_into_postgres_and_back() {
    let Some(pg) = crate::pg_catalog().await else {
        return;
    };
    let (a, _da) = make_sqlite().await.expect("sqlite");
    dump_survives(a, pg.clone()).await;
    let Some(pg2) = crate::pg_catalog().await else {
        return;
    };
    let (b, _db) = make_sqlite().await.expect("sqlite");
    dump_survives(pg2, b).await;
}
