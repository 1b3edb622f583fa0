// Which layers run and which are updated in a step: stochastic depth (layer drop) and frozen layers.
using System.Globalization;
using L2L.Model;

namespace L2L.Training.Update;

/// <summary>
/// The param server's per-step choice of layers. With layer drop each block is skipped with probability P in a step
/// (a hash of (seed, step, block), the same for every micro-batch and executor): a skipped block is the identity, is
/// neither fetched nor stashed, and is not updated (its optimizer state and update count stay as they were). If every
/// block would be skipped the top block runs. Frozen layers run forward but are never updated; no gradients are sent
/// for them, and backward stops below the lowest trainable layer.
/// </summary>
public sealed class LayerSelection
{
    private readonly ModelLayout _layout;
    private readonly bool[] _frozen;
    private readonly uint _threshold;
    private readonly long _seed;

    /// <summary>Creates the selection for <paramref name="layout"/>.</summary>
    /// <param name="layout">The model's layers.</param>
    /// <param name="layerDrop">Probability in [0, 1) that a block is skipped in a step.</param>
    /// <param name="seed">The run's seed.</param>
    /// <param name="frozen">Indices (in the layout) of frozen layers.</param>
    public LayerSelection(ModelLayout layout, float layerDrop = 0f, long seed = 0, IEnumerable<int>? frozen = null)
    {
        if (!(layerDrop >= 0f && layerDrop < 1f))
            throw new ArgumentOutOfRangeException(nameof(layerDrop), layerDrop, "--layer-drop must be in [0, 1).");
        _layout = layout;
        _frozen = new bool[layout.Layers.Count];
        foreach (var i in frozen ?? []) _frozen[i] = true;
        LayerDrop = layerDrop;
        _threshold = Kernels.DropoutKernels.Threshold(layerDrop);
        _seed = seed;
    }

    /// <summary>No layer drop, nothing frozen.</summary>
    public static LayerSelection All(ModelLayout layout) => new(layout);

    /// <summary>The probability that a block is skipped.</summary>
    public float LayerDrop { get; }

    /// <summary>Whether layer <paramref name="layer"/> (layout index) is frozen.</summary>
    public bool IsFrozen(int layer) => _frozen[layer];

    /// <summary>Whether any layer is frozen.</summary>
    public bool AnyFrozen => _frozen.Any(f => f);

    /// <summary>The blocks (positions 0..L-1 in <see cref="ModelLayout.Blocks"/>) that run in 0-based step <paramref name="step"/>, in order.</summary>
    public int[] ActiveBlocks(long step)
    {
        var count = _layout.Blocks.Count;
        if (LayerDrop == 0f)
            return Enumerable.Range(0, count).ToArray();
        var key = Kernels.DropoutKernels.Key(_seed, step, -1, 0x4C44); // a key of its own, apart from dropout's
        var active = Enumerable.Range(0, count).Where(l => Kernels.DropoutKernels.Keep(key, l, _threshold)).ToArray();
        return active.Length > 0 ? active : [count - 1];
    }

    /// <summary>
    /// Parses <c>--freeze</c>: a comma-separated list of <c>embedding</c>, <c>head</c>, block numbers and ranges
    /// <c>a-b</c> (0-based, inclusive). Returns layout indices.
    /// </summary>
    /// <exception cref="ArgumentException">An entry is not a layer of the model.</exception>
    public static IReadOnlyList<int> ParseFreeze(string spec, ModelLayout layout)
    {
        var result = new SortedSet<int>();
        var blocks = layout.Blocks.Count;
        foreach (var raw in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (raw.Equals("embedding", StringComparison.OrdinalIgnoreCase)) { result.Add(layout.Embedding.Index); continue; }
            if (raw.Equals("head", StringComparison.OrdinalIgnoreCase)) { result.Add(layout.Head.Index); continue; }
            var dash = raw.IndexOf('-');
            int from, to;
            bool ok;
            if (dash < 0)
            {
                ok = int.TryParse(raw, NumberStyles.None, CultureInfo.InvariantCulture, out from);
                to = from;
            }
            else
            {
                ok = int.TryParse(raw[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out from)
                    & int.TryParse(raw[(dash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out to);
            }
            if (!ok || from > to || to >= blocks)
                throw new ArgumentException($"--freeze '{raw}' is not a layer: use embedding, head, a block number or a range a-b of blocks 0-{blocks - 1}, separated by commas.");
            for (var l = from; l <= to; l++) result.Add(layout.Blocks[l].Index);
        }
        return result.ToArray();
    }
}
