//! Set operations over postings lists (strictly increasing series references): the
//! intersection, union and difference that select series for label matchers.

use std::cmp::Ordering;

/// Series present in every list. No lists intersect to nothing.
pub fn intersect(mut lists: Vec<Vec<u32>>) -> Vec<u32> {
    // Smallest first keeps every step bounded by the smallest list.
    lists.sort_by_key(Vec::len);
    let mut it = lists.into_iter();
    let Some(mut acc) = it.next() else {
        return Vec::new();
    };
    for l in it {
        if acc.is_empty() {
            break;
        }
        acc = intersect_two(&acc, &l);
    }
    acc
}

fn intersect_two(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            Ordering::Less => i += 1,
            Ordering::Greater => j += 1,
            Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Series present in any list, in order, without duplicates.
pub fn union(lists: Vec<Vec<u32>>) -> Vec<u32> {
    let mut lists = lists;
    match lists.len() {
        0 => Vec::new(),
        1 => lists.pop().unwrap_or_default(),
        _ => {
            let mut all: Vec<u32> = lists.concat();
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

/// Series in `a` but not in `b`.
pub fn subtract(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let a = vec![1, 3, 5, 7, 9];
        let b = vec![3, 4, 5, 9, 10];
        assert_eq!(intersect(vec![a.clone(), b.clone()]), vec![3, 5, 9]);
        assert_eq!(intersect(vec![]), Vec::<u32>::new());
        assert_eq!(
            union(vec![a.clone(), b.clone()]),
            vec![1, 3, 4, 5, 7, 9, 10]
        );
        assert_eq!(subtract(&a, &b), vec![1, 7]);
        assert_eq!(subtract(&a, &[]), a);
    }
}
