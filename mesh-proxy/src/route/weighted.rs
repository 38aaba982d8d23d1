//! Choosing one of several weighted destinations (HTTP routes and layer 4 routes alike).

/// The item a uniformly random `roll` lands on, each taking `weight(item)` of `total` (the sum
/// of the weights, above 0: checked when the route is compiled).
pub fn pick<T>(items: &[T], total: u32, roll: u32, weight: impl Fn(&T) -> u32) -> &T {
    let mut point = roll % total;
    for item in items {
        let w = weight(item);
        if point < w {
            return item;
        }
        point -= w;
    }
    unreachable!("point is below the total weight")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_takes_its_share_of_the_rolls() {
        let items = [("a", 1), ("b", 0), ("c", 3)];
        let mut counts = [0; 3];
        for roll in 0..400 {
            let picked = pick(&items, 4, roll, |i| i.1);
            counts[items.iter().position(|i| i.0 == picked.0).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 0, 300]);
    }
}
