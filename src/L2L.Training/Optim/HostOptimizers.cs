// Factory for the host optimizers.
namespace L2L.Training.Optim;

/// <summary>Creates host optimizers.</summary>
public static class HostOptimizers
{
    /// <summary>Creates the optimizer <paramref name="settings"/> describes.</summary>
    /// <param name="settings">Update rule and hyper-parameters.</param>
    /// <param name="threads">Most threads one <c>Step</c> call uses, the calling thread included; <c>null</c> means <see cref="Environment.ProcessorCount"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException">A hyper-parameter is outside its range or <paramref name="threads"/> is below 1.</exception>
    public static IHostOptimizer Create(OptimizerSettings settings, int? threads = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var t = threads ?? Environment.ProcessorCount;
        if (t < 1) throw new ArgumentOutOfRangeException(nameof(threads), t, "threads must be at least 1.");
        if (!(settings.WeightDecay >= 0f) || float.IsInfinity(settings.WeightDecay))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.WeightDecay, "WeightDecay must be finite and >= 0.");
        if (settings.Kind != OptimizerKind.Sgd)
        {
            if (!(settings.Beta1 >= 0f && settings.Beta1 < 1f))
                throw new ArgumentOutOfRangeException(nameof(settings), settings.Beta1, "Beta1 must be in [0, 1).");
            if (!(settings.Beta2 >= 0f && settings.Beta2 < 1f))
                throw new ArgumentOutOfRangeException(nameof(settings), settings.Beta2, "Beta2 must be in [0, 1).");
            if (!(settings.Epsilon >= 0f) || float.IsInfinity(settings.Epsilon))
                throw new ArgumentOutOfRangeException(nameof(settings), settings.Epsilon, "Epsilon must be finite and >= 0.");
        }
        return settings.Kind switch
        {
            OptimizerKind.Sgd => new SgdOptimizer(settings, t),
            OptimizerKind.AdamW => new AdamWOptimizer(settings, t),
            OptimizerKind.Lamb => new LambOptimizer(settings, t),
            _ => throw new ArgumentOutOfRangeException(nameof(settings), settings.Kind, "Unknown optimizer kind."),
        };
    }
}
