// Learning-rate schedules: constant, or linear warmup followed by cosine decay.
namespace L2L.Training;

/// <summary>How the learning rate changes over training.</summary>
public enum ScheduleKind
{
    /// <summary>The base rate throughout (after the optional warmup).</summary>
    Constant,
    /// <summary>Linear warmup, then cosine decay to <see cref="LearningRateSchedule.MinRatio"/> times the base rate at the last step.</summary>
    Cosine,
}

/// <summary>The learning rate at each 0-based step.</summary>
/// <param name="Kind">Constant or cosine.</param>
/// <param name="BaseRate">The peak learning rate.</param>
/// <param name="WarmupSteps">Steps of linear warmup from BaseRate/WarmupSteps up to BaseRate.</param>
/// <param name="TotalSteps">The step count the cosine decays over.</param>
/// <param name="MinRatio">The final rate as a fraction of the base rate (cosine only).</param>
public sealed record LearningRateSchedule(ScheduleKind Kind, float BaseRate, int WarmupSteps = 0, long TotalSteps = 1, float MinRatio = 0.1f)
{
    /// <summary>The rate for 0-based step <paramref name="step"/>.</summary>
    public float At(long step)
    {
        if (WarmupSteps > 0 && step < WarmupSteps)
            return BaseRate * (step + 1) / WarmupSteps;
        if (Kind == ScheduleKind.Constant)
            return BaseRate;
        var decaySteps = Math.Max(1, TotalSteps - WarmupSteps);
        var progress = Math.Clamp((double)(step - WarmupSteps) / decaySteps, 0.0, 1.0);
        var min = BaseRate * MinRatio;
        return (float)(min + 0.5 * (BaseRate - min) * (1 + Math.Cos(Math.PI * progress)));
    }
}
