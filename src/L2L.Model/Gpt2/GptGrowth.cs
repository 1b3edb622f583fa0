// Deepening a trained GPT-2 function-preservingly: new pre-LN blocks whose output projections are zero are the identity.
namespace L2L.Model;

/// <summary>Where <see cref="ModelGrowth.Grow"/> puts the new blocks.</summary>
public enum GrowthPlacement
{
    /// <summary>After the existing blocks.</summary>
    Top,
    /// <summary>Spread evenly between the existing blocks (after block i come its share of the new ones).</summary>
    Interleave,
}

/// <summary>
/// Grows a model to more blocks without changing its outputs. In a pre-LN GPT-2 block the residual branches end in
/// <c>attn.c_proj</c> and <c>mlp.c_proj</c>; with their weights and biases zero a block adds exactly 0 to the stream,
/// so the grown model computes the same function (bit for bit), while the rest of each new block is freshly initialised
/// so the zero projections receive non-zero gradients and the block starts to learn. Post-LN models (BERT) have no such
/// identity block and are refused.
/// </summary>
public static class ModelGrowth
{
    private static readonly string[] ZeroTensors = ["attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"];

    /// <summary>
    /// Returns the grown config and weights, and for each block of the grown model the old block it came from
    /// (or -1 for a new one).
    /// </summary>
    /// <exception cref="ArgumentException">The model cannot be grown this way or <paramref name="layers"/> is not larger.</exception>
    public static (IModelConfig Config, float[][] Weights, int[] Origin) Grow(IModelConfig config, IReadOnlyList<float[]> weights, int layers,
        GrowthPlacement at, int seed)
    {
        if (config is not GptConfig gpt)
            throw new ArgumentException($"Growing is for pre-LN GPT-2 models, whose blocks can start as the identity; a {config.ModelType} model has no such block.");
        if (gpt.UnitScaling)
            throw new ArgumentException("Growing a unit-scaled GPT-2 is not supported: its residual adds weight the skip path by sqrt(1 - tau) and the MLP's tau follows the block's depth, so a block with zero output projections is not the identity.");
        if (layers <= gpt.Layers)
            throw new ArgumentException($"--layers {layers} must be more than the checkpoint's {gpt.Layers} blocks.");
        var oldLayout = new ModelLayout(gpt);
        var grown = gpt.WithLayers(layers);
        var layout = new ModelLayout(grown);
        var origin = Placement(gpt.Layers, layers, at);
        var init = Models.LayerInitializer(layout, seed);
        var result = new float[layout.Layers.Count][];
        result[layout.Embedding.Index] = (float[])weights[oldLayout.Embedding.Index].Clone();
        result[layout.Head.Index] = (float[])weights[oldLayout.Head.Index].Clone();
        for (var b = 0; b < layers; b++)
        {
            var block = layout.Blocks[b];
            if (origin[b] >= 0)
            {
                result[block.Index] = (float[])weights[oldLayout.Blocks[origin[b]].Index].Clone();
                continue;
            }
            var fresh = new float[block.Length];
            init(block.Index, fresh);
            foreach (var name in ZeroTensors)
            {
                var slot = block[name];
                Array.Clear(fresh, (int)slot.Offset, (int)slot.Length);
            }
            result[block.Index] = fresh;
        }
        return (grown, result, origin);
    }

    /// <summary>For each of the <paramref name="layers"/> new positions, the old block there, or -1 for a new block.</summary>
    public static int[] Placement(int oldLayers, int layers, GrowthPlacement at)
    {
        var added = layers - oldLayers;
        if (at == GrowthPlacement.Top)
            return Enumerable.Range(0, oldLayers).Concat(Enumerable.Repeat(-1, added)).ToArray();
        var result = new List<int>(layers);
        for (var i = 0; i < oldLayers; i++)
        {
            result.Add(i);
            // Old block i is followed by its share of the new ones, so they spread evenly through the depth.
            var after = (i + 1) * added / oldLayers - i * added / oldLayers;
            result.AddRange(Enumerable.Repeat(-1, after));
        }
        return result.ToArray();
    }
}
