// Growing a checkpoint: the model deepened function-preservingly, old layers keeping their optimizer state, new ones fresh.
using L2L.Model;

namespace L2L.Training;

/// <summary>Deepens a saved model (see <see cref="ModelGrowth"/>) and carries its training state over, so the grown checkpoint resumes.</summary>
public static class CheckpointGrowth
{
    /// <summary>
    /// Reads the checkpoint in <paramref name="checkpoint"/>, grows it to <paramref name="layers"/> blocks placed
    /// <paramref name="at"/> the top or interleaved, and writes the result to <paramref name="output"/>. When the checkpoint
    /// has training state, old layers keep their optimizer state and update counts, new blocks start with zero state and
    /// a count of 0 (their first AdamW step is t = 1), and the step count, loss scale and other metadata carry over.
    /// </summary>
    /// <returns>The grown model's config.</returns>
    public static IModelConfig Grow(string checkpoint, int layers, string output, GrowthPlacement at, int seed)
    {
        if (Path.GetFullPath(checkpoint).TrimEnd(Path.DirectorySeparatorChar) == Path.GetFullPath(output).TrimEnd(Path.DirectorySeparatorChar))
            throw new ArgumentException("--out must be a directory other than --checkpoint, so the original stays intact.");
        var (config, weights) = Checkpoint.Load(checkpoint);
        var (grown, grownWeights, origin) = ModelGrowth.Grow(config, weights, layers, at, seed);
        var oldLayout = new ModelLayout(config);
        var layout = new ModelLayout(grown);
        // For each layer of the grown model, the old layer it came from (or -1 for a new block).
        var from = new int[layout.Layers.Count];
        from[layout.Embedding.Index] = oldLayout.Embedding.Index;
        from[layout.Head.Index] = oldLayout.Head.Index;
        for (var b = 0; b < layout.Blocks.Count; b++)
            from[layout.Blocks[b].Index] = origin[b] >= 0 ? oldLayout.Blocks[origin[b]].Index : -1;

        TrainingState? state = null;
        if (Checkpoint.HasTrainingState(checkpoint))
        {
            var old = Checkpoint.LoadTrainingState(checkpoint, oldLayout);
            var counts = new Update.GradientControl(null, Update.ClipMode.Global, Update.LossScaleMode.None, oldLayout.Layers.Count, old);
            var states = new float[layout.Layers.Count][];
            var updates = new long[layout.Layers.Count];
            for (var i = 0; i < states.Length; i++)
            {
                states[i] = from[i] >= 0 ? old.LayerStates[from[i]] : new float[old.StateFloatsPerParam * layout.Layers[i].Length];
                updates[i] = from[i] >= 0 ? counts.UpdatesOf(from[i]) : 0;
            }
            var metadata = new Dictionary<string, string>(old.Metadata)
            {
                ["layer_updates"] = string.Join(",", updates.Select(u => u.ToString(System.Globalization.CultureInfo.InvariantCulture))),
                ["grown_from_layers"] = config.Layers.ToString(System.Globalization.CultureInfo.InvariantCulture),
            };
            state = new TrainingState(old.Step, old.Optimizer, old.StateFloatsPerParam, states, metadata);
        }
        Checkpoint.Save(output, layout, grownWeights, state);
        return grown;
    }
}
