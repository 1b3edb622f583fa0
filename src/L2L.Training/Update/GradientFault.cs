// A test hook: poisons one layer's gradient at one step, to exercise the overflow path of dynamic loss scaling.
namespace L2L.Training.Update;

/// <summary>
/// Makes layer <paramref name="Layer"/>'s gradient non-finite (its first element becomes NaN) at 0-based step
/// <paramref name="Step"/>, after backward and before the gradient norm is taken: an injected overflow.
/// </summary>
/// <param name="Step">The 0-based step.</param>
/// <param name="Layer">The layer index in the model layout.</param>
public sealed record GradientFault(long Step, int Layer);
