#!/usr/bin/env python
"""Why `knn` mode trailed `class_mean`: one trained SPM, its memory and fusion head, read in several ways.

    python bench/knn_readings.py --model outputs/cifar10-cpu-spm [--max-test-samples 2000] [--k 16 64 256]

For each search space (squared L2 of the embeddings, the memory's own search; their cosine; the cosine of
the fusion's query / prototype projections) and each k, test accuracy (%) of

* `neighbourhood means`: one prototype per class, the mean of its neighbours (the authors' SPM-R);
* `vote`: the class with most neighbours;
* `neighbour softmax`: every neighbour scored by the fusion, a class's probability the sum over its
  neighbours (`knn_aggregation="neighbour_softmax"`, the default);

beside `class_mean`. Brute-force search over the whole memory, so use a memory of at most some 10^4 rows.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved SPMForImageClassification folder with a memory")
    parser.add_argument("--dataset", default="cifar10", help="the dataset whose test split to read")
    parser.add_argument("--max-test-samples", type=int, default=2000)
    parser.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    args = parser.parse_args(argv)

    from spm_hf.data import as_uint8_tensors, load_image_dataset
    from spm_hf.image_processing_spm import normalize_uint8
    from spm_hf.modeling_spm import SPMForImageClassification, neighbour_softmax_log_probs, neighbourhood_prototypes

    model = SPMForImageClassification.from_pretrained(args.model).eval()
    data = load_image_dataset(args.dataset, splits=("test",))
    images, labels, _ = as_uint8_tensors(data["test"], limit=args.max_test_samples)
    memory, fusion, num_classes = model.memory, model.fusion, model.config.num_labels
    with torch.no_grad():
        queries = torch.cat([model.encode(normalize_uint8(images[i : i + 500], model.image_processor))
                             for i in range(0, len(images), 500)])
        values, value_labels = memory.values.float(), memory.labels

        def accuracy(log_probs):
            return round(100.0 * (log_probs.argmax(-1) == labels).float().mean().item(), 2)

        means, present = memory.class_means()
        results = {"class_mean": accuracy(fusion(queries, means.to(queries), present)), "readings": []}
        spaces = {
            "squared L2": -torch.cdist(queries, values) ** 2,
            "cosine": F.normalize(queries, dim=-1) @ F.normalize(values, dim=-1).T,
        }
        if hasattr(fusion, "query_proj"):
            spaces["fusion projections' cosine"] = (F.normalize(fusion.query_proj(queries), dim=-1)
                                                    @ F.normalize(fusion.prototype_proj(values), dim=-1).T)
        for space, similarity in spaces.items():
            for k in args.k:
                index = similarity.topk(min(k, len(values)), dim=1).indices
                neighbours, neighbour_labels = values[index], value_labels[index]
                prototypes, here = neighbourhood_prototypes(neighbours, neighbour_labels, num_classes)
                votes = F.one_hot(neighbour_labels, num_classes).sum(1).float()
                results["readings"].append({
                    "search": space, "k": k,
                    "neighbourhood means": accuracy(fusion(queries, prototypes, here)),
                    "vote": accuracy(votes),  # ties: the first class
                    "neighbour softmax": accuracy(neighbour_softmax_log_probs(fusion, queries, neighbours,
                                                                             neighbour_labels, num_classes)),
                })
    print(f"class_mean: {results['class_mean']:.2f} % ({len(labels)} test images, memory {len(memory)} rows)")
    print("| search | k | neighbourhood means | vote | neighbour softmax |\n|---|---:|---:|---:|---:|")
    for r in results["readings"]:
        print(f"| {r['search']} | {r['k']} | {r['neighbourhood means']:.2f} | {r['vote']:.2f} "
              f"| {r['neighbour softmax']:.2f} |")
    return results


if __name__ == "__main__":
    main()
